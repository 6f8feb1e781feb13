"""Collection throughput: judgements per second for N items, end to end through `collect`.

    python benchmarks/collect_throughput.py                  # 20,000 items, --judge sim
    python benchmarks/collect_throughput.py --judge pkg.mod:factory --judge-opt k=v

Two passes with the same judge object, into two fresh runs in a temporary directory:
``cold`` is a new process's first collection (a judge that caches per prompt, like the
sim's sentence embeddings, fills its cache here), ``warm`` a second plan over the same
prompts (another --seed) once that cache is full; issue 3's target (>= 1,000/s) is for
``warm``. Rates count judging only (`CollectSummary.rate`: journal writes included,
planning excluded). Prints the machine and the command, to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from flowforge.data.collect import CollectConfig, CollectSummary, collect
from flowforge.judge.loader import LoadedJudge, load_judge, parse_judge_options


def machine() -> str:
    """CPU model, logical cores, OS and Python: what a throughput number depends on."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run_pass(
    args: argparse.Namespace, judge: LoadedJudge, folder: Path, seed: int
) -> CollectSummary:
    config = CollectConfig(
        out=folder / f"run-{seed}",
        judge=args.judge,
        judge_opt=tuple(sorted(parse_judge_options(args.judge_opt).items())),
        prompts=args.prompts,
        library_size=args.library_size,
        pairs=args.items // args.seeds,
        seeds=args.seeds,
        seed=seed,
        batch_size=args.batch_size,
    )
    started = time.monotonic()
    summary = collect(config, judge)
    print(
        f"  seed {seed}: {summary.judged:,} judged ({summary.scored:,} scored, errors "
        f"{dict(summary.errors_by_kind)}) in {summary.judging_seconds:.1f} s judging, "
        f"{time.monotonic() - started:.1f} s total: {summary.rate:,.0f} judgements/s"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per (prompt, workflow)")
    parser.add_argument("--judge", default="sim")
    parser.add_argument("--judge-opt", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--prompts", default="train")
    parser.add_argument("--library-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    started = time.monotonic()
    judge = load_judge(args.judge, parse_judge_options(args.judge_opt))
    print(f"judge {judge.judge_id} loaded in {time.monotonic() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="flowforge-bench-") as folder:
        cold = run_pass(args, judge, Path(folder), seed=0)
        warm = run_pass(args, judge, Path(folder), seed=1)
    print(f"machine: {machine()}")
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"result: {args.items:,} items, batch {args.batch_size}: cold {cold.rate:,.0f}/s, "
        f"warm {warm.rate:,.0f}/s"
    )


if __name__ == "__main__":
    main()
