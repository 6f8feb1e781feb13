"""Throughput of the simulated judge: judgements per second on this machine.

Measures `SimJudge.score` on 20,000 (prompt, workflow, seed) items, as collection sends them:
library workflows (default library: 300 built from the shipped seeds) with train prompts
written in, in batches. Prompt embeddings are computed (or loaded from the disk cache) before
timing, so this measures judging, not the sentence encoder; the first pass over the batches
also reads and validates each distinct design once, which is included in the "cold" number.

Run: ``python benchmarks/sim_throughput.py [--items 20000] [--batch 256] [--seed 0]``
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

import numpy as np

from flowforge.data.prompts import load_prompts
from flowforge.judge.base import JudgeItem
from flowforge.judge.sim import SimJudge
from flowforge.judge.sim.audit import default_library, with_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=200)
    args = parser.parse_args()

    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"
    )
    library = default_library()
    prompts = [p.text for p in load_prompts("train")[: args.prompts]]
    rng = random.Random(args.seed)
    filled = {}
    items = []
    for _ in range(args.items):
        prompt, index = rng.choice(prompts), rng.randrange(len(library))
        if (prompt, index) not in filled:
            filled[(prompt, index)] = with_prompt(library[index], prompt)
        items.append(JudgeItem(prompt, filled[(prompt, index)], rng.randrange(2**31)))
    judge = SimJudge(args.seed)
    judge.prompt_traits(prompts)  # embeddings cached before timing
    batches = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]
    for label in ("cold (designs read once)", "warm (designs cached)"):
        started = time.perf_counter()
        results = [result for batch in batches for result in judge.score(batch)]
        seconds = time.perf_counter() - started
        errors = sum(result.error is not None for result in results)
        print(
            f"{label}: {len(results):,} items in {seconds:.2f} s = "
            f"{len(results) / seconds:,.0f} judgements/s (batch {args.batch}, {errors} errors)"
        )


if __name__ == "__main__":
    main()
