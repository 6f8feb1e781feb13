"""One active-learning round on a finished run: judge GRPO's own designs, refit the ensemble,
GRPO again; prints the ensemble's error on the judged designs before and after the refit.

Usage: ``python benchmarks/refine_round.py --run RUN --out OUT [--judge sim:1]
[--samples 2] [--seeds 1] [--temperature 1.0]``, then
``flowforge evaluate --library RUN/library/workflows --data RUN/collect --sft RUN/sft
--comfygen-ft RUN/comfygen_ft --reward OUT/reward --grpo OUT/grpo --out OUT/evaluate``.

It runs `flowforge.pipeline.refine.refine` (what ``[refine] enabled = true`` does inside
``flowforge run``) on a run that was made without it, into OUT rather than RUN/refine, so a
run's stages stay untouched; OUT/refine.json gets the round's numbers, the mean gap
(ensemble mean prediction - judged training score, in each ensemble's own units) over the
judged designs before and after the refit, and the machine. Why the round: docs/evaluation.md
("The refine round"); results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from machine import command_line, describe_machine

from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import RefineStageConfig, load_run_config
from flowforge.pipeline.layout import REFINE_SUMMARY
from flowforge.pipeline.refine import JUDGED, RefinePaths, refine
from flowforge.reward.ensemble import RewardEnsemble, load_ensemble
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--out", required=True, type=Path, help="directory for the round")
    parser.add_argument("--judge", default=None, help="the run's judge (default: its config)")
    parser.add_argument("--samples", type=int, default=2, help="designs per train prompt")
    parser.add_argument("--seeds", type=int, default=1, help="render seeds per design")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
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
        enabled=True, samples=args.samples, seeds=args.seeds, temperature=args.temperature
    )
    started = time.perf_counter()
    summary = refine(
        paths, settings, config.reward, config.grpo, loaded, catalog, config.collect.negative
    )
    judged = pq.read_table(args.out / JUDGED).to_pylist()
    before = load_ensemble(args.run / "reward", catalog=catalog)
    after = load_ensemble(args.out / "reward", catalog=catalog)
    summary |= {
        "gap_before": _gap(before, judged),
        "gap_after_refit": _gap(after, judged),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": describe_machine(),
        "command": command_line(),
    }
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
