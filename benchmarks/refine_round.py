"""Active-learning rounds on a finished run: judge GRPO's own designs, refit the ensemble,
GRPO again; prints the ensemble's error on each round's judged designs before and after its
refit.

Usage: ``python benchmarks/refine_round.py --run RUN --out OUT [--judge sim:1]
[--rounds 1] [--samples 2] [--seeds 1] [--temperature 1.0]
[--audit-every N [--two-sided] [--audit-ridge R]]``, then
``flowforge evaluate --library RUN/library/workflows --data RUN/collect --sft RUN/sft
--comfygen-ft RUN/comfygen_ft --reward OUT/round-N/reward --grpo OUT/round-N/grpo
--out OUT/evaluate`` (N the last round).

It runs `flowforge.pipeline.refine.refine` (what ``[refine] enabled = true`` does inside
``flowforge run``) on a run that was made without it, into OUT rather than RUN/refine, so a
run's stages stay untouched; OUT/refine.json gets the rounds' numbers, each round's mean gap
(ensemble mean prediction - judged training score, in each ensemble's own units) over its
judged designs before its refit (the previous round's ensemble, the run's for the first) and
after, and the machine. Why the rounds: docs/evaluation.md
("The refine rounds"); results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from machine import stamped

from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import RefineStageConfig, load_run_config
from flowforge.pipeline.layout import REFINE_SUMMARY, round_dir
from flowforge.pipeline.refine import JUDGED, AuditJudge, RefinePaths, refine
from flowforge.reward.ensemble import RewardEnsemble, load_ensemble
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--out", required=True, type=Path, help="directory for the rounds")
    parser.add_argument("--judge", default=None, help="the run's judge (default: its config)")
    parser.add_argument("--rounds", type=int, default=1, help="active-learning rounds")
    parser.add_argument("--samples", type=int, default=2, help="designs per train prompt")
    parser.add_argument("--seeds", type=int, default=1, help="render seeds per design")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument(
        "--policies", type=int, default=1, help="GRPO runs per round, the judge keeps one"
    )
    parser.add_argument(
        "--audit-every", type=int, default=None, help="judged audits in each round's GRPO"
    )
    parser.add_argument(
        "--two-sided", action="store_true", help="audits also raise underrated designs"
    )
    parser.add_argument("--audit-ridge", type=float, default=None, help="the audits' ridge")
    args = parser.parse_args()

    config = load_run_config(args.run / "config.json")
    loaded = load_judge(args.judge or config.judge, dict(config.judge_opt))
    catalog = load_catalog(args.run / "library" / "object_info.json")
    paths = RefinePaths(
        collect=args.run / "collect",
        sft=args.run / "sft",
        grpo=args.run / "grpo",
        library=args.run / "library" / "workflows",
        out=args.out,
    )
    settings = RefineStageConfig(
        enabled=True,
        rounds=args.rounds,
        samples=args.samples,
        seeds=args.seeds,
        temperature=args.temperature,
        policies=args.policies,
    )
    grpo = config.grpo
    if args.audit_every is not None:
        grpo = replace(grpo, audit_every=args.audit_every, audit_two_sided=args.two_sided)
    if args.audit_ridge is not None:
        grpo = replace(grpo, audit_ridge=args.audit_ridge)
    negative = config.collect.negative
    started = time.perf_counter()
    summary = refine(
        paths,
        settings,
        config.reward,
        grpo,
        loaded,
        catalog,
        negative,
        audits=AuditJudge(args.judge or config.judge, config.judge_opt, negative),
    )
    before = load_ensemble(args.run / "reward", catalog=catalog)
    for number, line in enumerate(summary["rounds"], start=1):
        here = args.out / round_dir(number)
        judged = pq.read_table(here / JUDGED).to_pylist()
        after = load_ensemble(here / "reward", catalog=catalog)
        line |= {"gap_before": _gap(before, judged), "gap_after_refit": _gap(after, judged)}
        before = after
    summary = stamped(summary | {"seconds": round(time.perf_counter() - started, 1)})
    (args.out / REFINE_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    print(json.dumps(summary, indent=1))


def _gap(ensemble: RewardEnsemble, rows: list[dict[str, Any]]) -> float:
    """Mean (ensemble mean prediction - judged training score) over the judged rows."""
    scored = [
        (row, {k.removeprefix("score_"): v for k, v in row.items() if k.startswith("score_")})
        for row in rows
        if row["error"] is None
    ]
    predicted = ensemble.predict_detail(
        [row["prompt"] for row, _ in scored], [row["workflow_text"] for row, _ in scored]
    ).mean
    judged = np.array([ensemble.training_score(scores) for _, scores in scored])
    return round(float(np.nanmean(predicted - judged)), 3)


if __name__ == "__main__":
    main()
