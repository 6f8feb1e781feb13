"""How long does one design request take, model load included? (target < 3 s)

Usage: ``python benchmarks/design_latency.py [--policy /tmp/flowforge-bench/sft50k]
[--requests 10] [--samples 1]``. Prints three numbers per request kind:

- ``design()`` in a warm Python process: load the policy (tokenizer, safetensors, catalog
  lookups) and sample, parse, validate and write API + UI JSON, as ``flowforge design`` does
  after its imports;
- the same from a cold ``python -c`` (interpreter start and torch/transformers imports
  included, which no in-process work can shorten);
- a loaded `Designer` answering one more request (what an evaluation loop pays).

Then the machine and the command. The machine is shared: see the load average printed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see sft_speed.py

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.policy.design import DesignError, design, load_designer

COLD = """
import time, sys
start = time.perf_counter()
from flowforge.policy.design import design
result = design(sys.argv[1], sys.argv[2], samples=int(sys.argv[3]), seed=0, ui=True)
print(time.perf_counter() - start)
"""


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", type=Path, default=Path("/tmp/flowforge-bench/sft50k"))
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("heldout")][: args.requests]
    warm, failed = [], 0
    for k, prompt in enumerate(prompts):
        start = time.perf_counter()
        try:
            design(prompt, args.policy, samples=args.samples, seed=k, ui=True)
        except DesignError:
            failed += 1  # no valid sample: the time is still a full request
        warm.append(time.perf_counter() - start)
    print(
        f"design() with model load, warm process, {args.samples} sample(s): {summary(warm)}"
        f" over {len(prompts)} requests ({failed} without a valid sample)"
    )
    cold, errors = [], 0
    for prompt in prompts[:3]:
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", COLD, prompt, str(args.policy), str(args.samples)],
            check=False,
            capture_output=True,
        )
        cold.append(time.perf_counter() - start)
        errors += run.returncode != 0
    print(
        f"cold `python -c` (imports included): {summary(cold)} over {len(cold)} runs "
        f"({errors} ended in an error, e.g. no valid sample)"
    )
    designer = load_designer(args.policy)
    loaded = []
    for k, prompt in enumerate(prompts):
        start = time.perf_counter()
        with contextlib.suppress(DesignError):
            designer.design(prompt, samples=args.samples, seed=k, ui=True)
        loaded.append(time.perf_counter() - start)
    print(f"loaded Designer, one more request: {summary(loaded)}")
    print(f"load average {os.getloadavg()[0]:.2f} (shared 2-core machine)")
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
