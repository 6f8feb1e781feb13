"""Collection throughput: judgements per second for N items, end to end through `collect`.

    python benchmarks/collect_throughput.py                  # 20,000 items, --judge sim
    python benchmarks/collect_throughput.py --judge-opt cache_dir=$(mktemp -d)  # no cache
    python benchmarks/collect_throughput.py --judge pkg.mod:factory --judge-opt k=v

Two passes with the same judge object, into two fresh runs in a temporary directory:
``cold`` is the process's first collection (a judge that caches per prompt, as the sim does
its sentence embeddings, fills its in-memory cache here; the sim also keeps embeddings on
disk, so only an empty ``cache_dir`` makes this pass truly cold), ``warm`` a second plan
over the same prompts (another --seed) with that cache full: issue 3's target (>= 1,000/s
after the prompt embeddings are cached) is for ``warm``. Rates count judging only
(`CollectSummary.rate`: journal writes included, planning excluded). Prints the machine and
the command, for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.data.collect import CollectConfig, CollectSummary, collect
from flowforge.judge.loader import LoadedJudge, load_judge, parse_judge_options


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
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    started = time.monotonic()
    judge = load_judge(args.judge, parse_judge_options(args.judge_opt))
    print(f"judge {judge.judge_id} loaded in {time.monotonic() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="flowforge-bench-") as folder:
        cold = run_pass(args, judge, Path(folder), seed=0)
        warm = run_pass(args, judge, Path(folder), seed=1)
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")
    print(
        f"result: {args.items:,} items, batch {args.batch_size}: cold {cold.rate:,.0f}/s, "
        f"warm {warm.rate:,.0f}/s"
    )


if __name__ == "__main__":
    main()
