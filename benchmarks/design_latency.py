"""How long does one design request take, model load included? (target < 3 s)

Usage: ``python benchmarks/design_latency.py [--policy RUN/grpo] [--reference RUN/sft]
[--requests 10] [--samples 1]``. Prints:

- the cold command as a user runs it, ``python -m flowforge design PROMPT --policy DIR -o
  F`` in a new process (interpreter start, imports, model load, sampling, API + UI JSON),
  plain and, with ``--reference``, guided with w = 1.5 and 8 samples;
- ``design()`` in a warm Python process (model load included), per runtime;
- a loaded `Designer` answering one more request (what a service pays), per runtime.

Then the load average, the machine and the command. The machine is shared: read the load.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see sft_speed.py

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.policy.design import DesignError, design, load_designer


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


def cold_command(prompt: str, args: list[str], out: Path) -> tuple[float, bool]:
    """Wall time of one ``flowforge design`` process, and whether it succeeded."""
    command = [sys.executable, "-m", "flowforge", "design", prompt, *args, "--ui", "-o", str(out)]
    start = time.perf_counter()
    run = subprocess.run(command, check=False, capture_output=True)
    return time.perf_counter() - start, run.returncode == 0


def decoding_cost(policy: Path, reference: Path, prompts: list[str], repeats: int = 3) -> None:
    """Time per generated token of the numpy runtime (what `flowforge design` uses): plain
    (unconstrained), constrained, guided (w = 1.5) + constrained; 8 candidates per request,
    modes interleaved, the median of `repeats` passes over the prompts."""
    designers = {
        "plain": load_designer(policy, runtime="numpy", constrained=False),
        "constrained": load_designer(policy, runtime="numpy"),
        "guided+constrained": load_designer(
            policy, runtime="numpy", reference_dir=reference, guidance=1.5
        ),
    }
    per_token: dict[str, list[float]] = {name: [] for name in designers}
    for _ in range(repeats):
        for name, designer in designers.items():
            tokens, start = 0, time.perf_counter()
            for k, prompt in enumerate(prompts):
                drawn = designer.sampler(prompt, n=8, temperature=0.7, seed=k, negative="")
                tokens += sum(len(s.token_ids) + s.finished for s in drawn)
            per_token[name].append((time.perf_counter() - start) / tokens)
    plain = statistics.median(per_token["plain"])
    for name, values in per_token.items():
        cost = statistics.median(values)
        print(f"numpy decoding, {name}: {1e6 * cost:.0f} us/token ({cost / plain:.2f}x plain)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()
    prompts = [p.text for p in load_prompts("heldout")][: args.requests]
    kinds = {"plain": ["--policy", str(args.policy), "--samples", str(args.samples)]}
    if args.reference is not None:
        kinds["guided w=1.5, 8 samples"] = [
            *("--policy", str(args.policy), "--reference", str(args.reference)),
            *("--guidance", "1.5", "--samples", "8"),
        ]
    with tempfile.TemporaryDirectory() as folder:
        for kind, extra in kinds.items():
            runs = [cold_command(p, extra, Path(folder) / "d.json") for p in prompts[:5]]
            failed = sum(not ok for _, ok in runs)
            print(
                f"cold `flowforge design` ({kind}): {summary([t for t, _ in runs])} over "
                f"{len(runs)} processes ({failed} failed)"
            )
    for runtime in ("numpy", "transformers"):
        warm, failed = [], 0
        for k, prompt in enumerate(prompts):
            start = time.perf_counter()
            try:
                design(prompt, args.policy, samples=args.samples, seed=k, ui=True, runtime=runtime)
            except DesignError:
                failed += 1  # no valid sample: the time is still a full request
            warm.append(time.perf_counter() - start)
        print(
            f"design() [{runtime}] with model load, warm process, {args.samples} sample(s): "
            f"{summary(warm)} over {len(prompts)} requests ({failed} without a valid sample)"
        )
        designer = load_designer(args.policy, runtime=runtime)
        loaded = []
        for k, prompt in enumerate(prompts):
            start = time.perf_counter()
            with contextlib.suppress(DesignError):
                designer.design(prompt, samples=args.samples, seed=k, ui=True)
            loaded.append(time.perf_counter() - start)
        print(f"loaded Designer [{runtime}], one more request: {summary(loaded)}")
    if args.reference is not None:
        decoding_cost(args.policy, args.reference, prompts)
    print(f"load average {os.getloadavg()[0]:.2f} (shared 2-core machine)")
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
