"""Would a guard on validation prompts have caught a run whose policy lost to a baseline?

Usage: ``python benchmarks/validation_guard.py --run RUN [--run RUN2 ...] [--prompts 131]
[--seeds 2] [--spare-geneval] [--policy grpo-2] [--json OUT.json]``. For each finished
``flowforge run`` directory (with its ``evaluate/report.json``), with the run's own
evaluation settings, judge and choice of w: design for the validation prompts (the split
the run's choices read, which no stage trains on) with the best fixed workflow, retrieval,
GRPO's start, the policy at the chosen w and best-of-N of it (what ``flowforge design
--run`` hands a user), each judged on the same render seeds (their own, not the
evaluation's nor the choices'). Prints per method the mean training score (what a guard may
read) and, for the analysis only, the held-out scorer's mean and win rate against the best
fixed workflow on these prompts, beside the same method's held-out numbers from the run's
report.

Why: a run's GRPO draw can end below the best fixed workflow on held-out prompts (session
28: 0.407 against 0.439 on world 0). A guard that judges the product against the best fixed
workflow on validation prompts and hands over the better is only worth building if its
verdict on validation prompts agrees with what the held-out evaluation then shows.

``--spare-geneval`` judges, instead, the held-out GenEval prompts the run's evaluation did
not compare on (those after its first ``[evaluate] prompts`` held-out prompts): an analysis
of what a validation slice of GenEval would show, never something a stage may read (the
validation split is PartiPrompts only, docs/prompts.md). ``--policy NAME`` puts another GRPO
policy of the run's last refine round (``grpo-2``: the one the choice did not keep) in the
kept one's place, at the same w: what the choice left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from machine import command_line, describe_machine, stamped

from flowforge.data.prompts import Prompt, fixed_sample, load_prompts
from flowforge.evaluate.compare import default_encoder, load_sources
from flowforge.evaluate.designers import WeightChoice, derive_seed
from flowforge.evaluate.judging import check_design, judged_requests
from flowforge.evaluate.methods import build_methods
from flowforge.evaluate.metrics import win_rate
from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import load_run_config
from flowforge.pipeline.stages import run_inputs

#: The methods compared (report names); best-of-N's name follows the run's `best_of_n`.
COMPARED = ("best_fixed", "retrieval", "grpo_start", "grpo_wsel")


def spare_geneval(compared: int | None) -> list[Prompt]:
    """The held-out GenEval prompts outside the evaluation's first `compared` held-out
    prompts (sha256(id) order), in that order."""
    ordered = fixed_sample(load_prompts("heldout"), None)
    used = {p.id for p in (ordered if compared is None else ordered[:compared])}
    return [p for p in ordered if p.source == "geneval" and p.id not in used]


def guard_table(
    run: Path, prompts: int | None, seeds: int, spare: bool = False, policy: str | None = None
) -> dict[str, Any]:
    """Every compared method's scores on the validation prompts, and the run's held-out ones."""
    config = load_run_config(run / "config.json")
    report = json.loads((run / "evaluate" / "report.json").read_text(encoding="utf-8"))
    made = report["guidance_choice"]
    choice = WeightChoice(
        float(made["weight"]),
        {float(w): float(s) for w, s in made["train_score_by_weight"].items()},
        int(made["prompts"]),
        int(made["judge_calls"]),
    )
    judge = load_judge(config.judge)
    inputs = run_inputs(run, comfygen_ft=False)
    if policy is not None and inputs.grpo is not None:
        inputs = dataclasses.replace(inputs, grpo=inputs.grpo.parent / policy)
    evaluation = config.evaluate
    sources, _ = load_sources(evaluation, inputs, judge, default_encoder, [])
    methods, _ = build_methods(sources, choice)
    wanted = (*COMPARED, f"best_of_{evaluation.best_of_n}")
    chosen = {m.name: m for m in methods if m.name in wanted}
    if spare:
        picked = spare_geneval(evaluation.prompts)[:prompts]
    else:
        picked = fixed_sample(load_prompts("validation"), prompts)
    texts = [p.text for p in picked]
    design_seeds = [derive_seed("guard", "design", p.id) for p in picked]
    renders = [[derive_seed("guard", "render", p.id, s) for s in range(seeds)] for p in picked]
    heldout = evaluation.heldout_scorer
    rows: dict[str, Any] = {}
    per_prompt: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in wanted:
        method = chosen[name]
        written = method.designer.design(texts, design_seeds)
        designs = [check_design(t, sources.catalog) for t in written]
        requests = judged_requests(designs, texts, renders)  # each design as written
        if len(requests) != len(texts) * seeds:
            raise SystemExit(f"{run}: {name} designed an invalid workflow on validation prompts")
        results = sources.session.judge_designs(requests)
        train = np.full(len(requests), np.nan)
        held = np.full(len(requests), np.nan)
        for k, result in enumerate(results):
            if result.scores is not None:
                train[k] = sources.training_score(result.scores)
                held[k] = result.scores[heldout]
        train_pp = np.nanmean(train.reshape(len(texts), seeds), axis=1)
        held_pp = np.nanmean(held.reshape(len(texts), seeds), axis=1)
        per_prompt[name] = (train_pp, held_pp)
        summary = next(m for m in report["methods"] if m["name"] == name)
        rows[name] = {
            "label": method.label,
            "validation_train": float(np.nanmean(train_pp)),
            "validation_heldout": float(np.nanmean(held_pp)),
            "evaluation_heldout": float(summary["heldout"]),
            "evaluation_win_vs_best_fixed": float(
                report["win_rates"]["heldout"][name]["best_fixed"]
            ),
        }
    fixed_train, fixed_held = per_prompt["best_fixed"]
    for name, (train_pp, held_pp) in per_prompt.items():
        row = rows[name]
        row["validation_train_win_vs_best_fixed"] = win_rate(list(train_pp), list(fixed_train))
        row["validation_heldout_win_vs_best_fixed"] = win_rate(list(held_pp), list(fixed_held))
    return {
        "run": str(run),
        "judge": config.judge,
        "policy": str(inputs.grpo),
        "weight": choice.weight,
        "prompts": len(texts),
        "split": "spare held-out GenEval" if spare else "validation",
        "seeds": seeds,
        "judge_calls": sources.session.calls,
        "methods": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, action="append", help="run dir(s)")
    parser.add_argument("--prompts", type=int, default=None, help="validation prompts (all)")
    parser.add_argument("--seeds", type=int, default=2, help="render seeds per prompt")
    parser.add_argument(
        "--spare-geneval",
        action="store_true",
        help="judge on the held-out GenEval prompts the evaluation did not use (analysis only)",
    )
    parser.add_argument("--policy", help="another GRPO policy of the last round (grpo-2)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    tables = []
    for run in args.run:
        table = guard_table(run, args.prompts, args.seeds, args.spare_geneval, args.policy)
        tables.append(table)
        print(
            f"\n{table['policy']} ({table['judge']}, w={table['weight']:g}, "
            f"{table['prompts']} {table['split']} prompts)"
        )
        print(
            f"{'method':<12} {'val train':>9} {'val held':>8} {'win tr':>6} {'win ho':>6} "
            f"{'eval held':>9} {'eval win':>8}"
        )
        for name, row in table["methods"].items():
            print(
                f"{name:<12} {row['validation_train']:>9.3f} {row['validation_heldout']:>8.3f} "
                f"{row['validation_train_win_vs_best_fixed']:>6.0%} "
                f"{row['validation_heldout_win_vs_best_fixed']:>6.0%} "
                f"{row['evaluation_heldout']:>9.3f} {row['evaluation_win_vs_best_fixed']:>8.0%}"
            )
    print(f"\nmachine: {describe_machine()}\ncommand: {command_line()}")
    if args.json is not None:
        args.json.write_text(json.dumps(stamped({"runs": tables}), indent=1) + "\n")


if __name__ == "__main__":
    main()
