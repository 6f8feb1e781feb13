"""How much does one GRPO run's result depend on its seed? GRPO again with other seeds.

Usage: ``python benchmarks/grpo_spread.py --run RUN --out OUT [--seeds 1,2]
[--reward DIR] [--judge sim:1]``. For each seed: GRPO with the run's settings but that
``seed`` (prompt order and every sample), from ``RUN/sft`` against ``RUN/reward`` (or
`--reward`), into ``OUT/seed-S/grpo``; then the run's evaluation without the oracle into
``OUT/seed-S/evaluate`` (same held-out prompts, render seeds and baselines). A seed whose
report exists is not run again, so the script resumes. It prints per seed the GRPO rows
(held-out score, win rate against the best fixed workflow, distinct designs) beside the
run's own seed (``RUN/evaluate``, when it was evaluated with the same ensemble), then the
mean and the sample standard deviation over seeds.

Why: every change to GRPO in docs/evaluation.md was judged on one run per world, and the
two worlds often moved in opposite directions. The spread over seeds says which of those
differences a single run can show at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from machine import command_line, describe_machine

from flowforge.evaluate.compare import evaluate
from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import load_run_config
from flowforge.pipeline.stages import run_inputs
from flowforge.policy.grpo import train_grpo


def _methods(best_of_n: int) -> tuple[tuple[str, str], ...]:
    """The report names and labels of the rows compared."""
    return (("grpo", "GRPO"), ("grpo_wsel", "w chosen"), (f"best_of_{best_of_n}", "best-of-N"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--out", required=True, type=Path, help="directory for the seeds")
    parser.add_argument("--seeds", default="1,2", help="GRPO seeds, comma-separated")
    parser.add_argument("--reward", type=Path, default=None, help="ensemble (default: RUN's)")
    parser.add_argument("--judge", default=None, help="the run's judge (default: its config)")
    args = parser.parse_args()

    config = load_run_config(args.run / "config.json")
    loaded = load_judge(args.judge or config.judge, dict(config.judge_opt))
    reward = args.reward or args.run / "reward"
    eval_config = replace(config.evaluate, oracle=False)
    reports: dict[str, Path] = {}
    if args.reward is None and (args.run / "evaluate" / "report.json").is_file():
        reports[f"{config.grpo.seed} (the run)"] = args.run / "evaluate" / "report.json"
    for seed in (int(s) for s in args.seeds.split(",")):
        out = args.out / f"seed-{seed}"
        report = out / "evaluate" / "report.json"
        if not report.is_file():
            grpo = replace(
                config.grpo,
                seed=seed,
                sft_dir=str(args.run / "sft"),
                reward_dir=str(reward),
                out=str(out / "grpo"),
                library_dir=str(args.run / "library" / "workflows"),
            )
            print(f"seed {seed}: GRPO -> {out / 'grpo'}", flush=True)
            train_grpo(grpo)
            inputs = replace(run_inputs(args.run), reward=reward, grpo=out / "grpo")
            print(f"seed {seed}: evaluating -> {out / 'evaluate'}", flush=True)
            evaluate(eval_config, inputs, loaded, out / "evaluate", on_progress=print)
        reports[str(seed)] = report

    methods = _methods(config.evaluate.best_of_n)
    rows = {seed: _row(json.loads(p.read_text("utf-8")), methods) for seed, p in reports.items()}
    header = " | ".join(f"{label} (win vs best fixed)" for _, label in methods)
    print(f"\n| GRPO seed | {header} | w chosen | GRPO distinct |")
    print("|---" * (len(methods) + 3) + "|")
    for seed, row in rows.items():
        cells = " | ".join(f"{row[n]:.3f} ({row[n + ':win']:.0%})" for n, _ in methods)
        print(f"| {seed} | {cells} | {row['w']:g} | {row['distinct']:.0f} |")
    if len(rows) >= 2:
        cells = " | ".join(
            f"{_spread([r[n] for r in rows.values()], 3)} "
            f"({_spread([100 * r[n + ':win'] for r in rows.values()], 0)}%)"
            for n, _ in methods
        )
        print(f"| mean +- sd | {cells} | | |")
    print(f"\nmachine: {describe_machine()}\ncommand: {command_line()}")


def _row(report: dict[str, Any], methods: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """The numbers of one report this benchmark compares."""
    by_name = {m["name"]: m for m in report["methods"]}
    wins = report["win_rates"]["heldout"]
    row: dict[str, float] = {"w": report["guidance_choice"]["weight"]}
    for name, _ in methods:
        row[name] = by_name[name]["heldout"]
        row[name + ":win"] = wins[name]["best_fixed"]
    row["distinct"] = by_name["grpo"]["distinct"]
    return row


def _spread(values: list[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


if __name__ == "__main__":
    main()
