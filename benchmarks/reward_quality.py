"""Quality of the reward ensemble on the simulated world: the issue-4 targets.

1. Collects, with the real CLI (resumable; a finished run is reused), a training run on
   train prompts and three evaluation runs: held-out prompts with the training library
   (seen designs, plus the ~10% of designs the training holds out), and held-out / train
   prompts with a library grown from another seed (designs no member has seen).
2. Trains the ensemble with default settings (timed) on the training run.
3. Evaluates on all runs against the sim's noise-free quality and prints, per split, the
   within-prompt Spearman, pairwise accuracy and top-1 regret of the ensemble, of the
   average single member and of the worst and best member, and whether the spread predicts
   the error.

Targets (held-out prompts): Spearman >= 0.7, pairwise accuracy >= 0.75, single member and
ensemble both reported. Run:
``python benchmarks/reward_quality.py [--work runs/reward_bench] [--world 0] [--pairs 11112]
[--score-transform none|logit]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from machine import command_line, describe_machine

from flowforge.reward.config import RewardConfig
from flowforge.reward.evaluate import evaluate_ensemble
from flowforge.reward.train import train_ensemble


def collect(out: Path, world: int, prompts: str, pairs: int, seeds: int, seed: int) -> str:
    command = [
        "flowforge", "collect", "--judge", f"sim:{world}", "--prompts", prompts,
        "--pairs", str(pairs), "--seeds", str(seeds), "--library-size", "1000",
        "--seed", str(seed), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return " ".join(command)


def row(name: str, m: dict[str, Any]) -> str:
    return (
        f"  {name:15s} Spearman {m['spearman']:.3f}  pairwise acc {m['pairwise_accuracy']:.3f}  "
        f"top-1 regret {m['top1_regret']:.4f} (random pick {m['random_regret']:.4f})"
    )


def report(splits: dict[str, Any]) -> None:
    for split, metrics in splits.items():
        units, prompts = metrics["units"], metrics["prompts"]
        print(f"{split}: {units:,} (prompt, design) units, {prompts:,} prompts")
        print(row("ensemble mean", metrics["ensemble"]))
        print(row("reward (kappa)", metrics["reward"]))
        print(row("member average", metrics["member_average"]))
        members = sorted(metrics["members"], key=lambda m: m["spearman"])
        print(row("worst member", members[0]))
        print(row("best member", members[-1]))
        bins = " ".join(
            f"{b['mean_std']:.3f}->{b['mean_error']:.3f}" for b in metrics["error_by_spread"]
        )
        print(
            f"  spread vs |error|: Spearman {metrics['spread_error_spearman']:.3f}; "
            f"per std quintile (mean std -> mean |error|): {bins}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/reward_bench"))
    parser.add_argument("--world", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=11_112, help="training pairs (x2 seeds)")
    parser.add_argument("--eval-pairs", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--score-transform", default="none", choices=["none", "logit"])
    args = parser.parse_args()
    work: Path = args.work / f"world{args.world}"
    runs = {
        "train": (work / "train", "train", args.pairs, 2, 0),
        "heldout prompts, training library": (work / "eval_hp", "heldout", args.eval_pairs, 1, 0),
        "heldout prompts, other library": (work / "eval_hp_lib1", "heldout", args.eval_pairs, 1, 1),
        "train prompts, other library": (work / "eval_tp_lib1", "train", args.eval_pairs, 1, 1),
    }
    for name, (out, prompts, pairs, seeds, seed) in runs.items():
        print(f"collect ({name}): {collect(out, args.world, prompts, pairs, seeds, seed)}")
    config = RewardConfig(members=args.members, score_transform=args.score_transform)
    model = work / f"model-{args.score_transform}-k{args.members}"
    result = train_ensemble(work / "train", model, config)
    print(
        f"trained {config.members} members on {result.rows:,} triplets ({result.prompts:,} "
        f"prompts, {result.designs:,} designs; {result.heldout_designs} designs held out) in "
        f"{result.seconds:.0f} s"
    )
    started = time.perf_counter()
    evaluation = evaluate_ensemble(
        result.ensemble, [path for path, *_ in runs.values()], model / "eval"
    )
    print(
        f"evaluated in {time.perf_counter() - started:.0f} s; reference: "
        f"{evaluation.report['reference']}; files: {[str(f) for f in evaluation.files]}"
    )
    report(evaluation.report["splits"])
    print(f"load average (1, 5, 15 min; 2 cores shared with other jobs): {os.getloadavg()}")
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
