"""One active-learning round: judge GRPO's own designs, retrain the ensemble, GRPO again.

Usage: ``python benchmarks/refine_round.py --run RUN --out OUT [--judge sim:1]
[--samples 2] [--seeds 1] [--temperature 1.0] [--prompts N]``, then
``flowforge evaluate --library RUN/library/workflows --data RUN/collect --sft RUN/sft
--comfygen-ft RUN/comfygen_ft --reward OUT/reward --grpo OUT/grpo --out OUT/evaluate``.

Why: GRPO's designs are new (most are not in the library), and there the ensemble is
extrapolating; on world 1 the policy climbs into designs the ensemble overrates (a positive
predicted-vs-judged gap: reward hacking). The remedy in RLHF practice is to judge what the
policy now writes and refit the reward model on it. This script measures whether one such
round helps here, and what it costs in judge calls:

1. sample `samples` designs per train prompt from ``RUN/grpo`` (temperature `temperature`,
   schema-constrained: what GRPO explores, not only what it designs at 0.7);
2. judge each valid design on `seeds` render seeds, exactly as collection does (the request
   written in by `RequestTemplate`, the run's negative), through the run's Judge only;
3. write the run's triplets plus these rows as ``OUT/triplets.parquet`` (the export's
   columns) and train an ensemble with the run's reward settings into ``OUT/reward``;
4. run GRPO with the run's settings from ``RUN/sft`` against the new ensemble, ``OUT/grpo``.

It prints the judge calls spent, how far the old ensemble's prediction of the new designs
was from their judged training score (before: the gap GRPO exploited) and the new one's,
and the time of each step. Nothing reads the simulator's hidden parameters.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from machine import command_line, describe_machine

from flowforge.data.export import run_table
from flowforge.data.plan import SEED_LIMIT, RequestTemplate
from flowforge.evaluate.designers import (
    PolicyDesigner,
    SamplingSettings,
    derive_seed,
    load_for_design,
)
from flowforge.judge.base import JudgeItem
from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import load_run_config
from flowforge.policy.grpo import train_grpo
from flowforge.reward.ensemble import load_ensemble
from flowforge.reward.train import train_ensemble
from flowforge.workflow.schema import load_catalog
from flowforge.workflow.textform import design_hash

CHUNK = 64  # prompts per sampling call (progress is printed per chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--out", required=True, type=Path, help="directory for the round")
    parser.add_argument("--judge", default=None, help="the run's judge (default: its config)")
    parser.add_argument("--samples", type=int, default=2, help="designs per train prompt")
    parser.add_argument("--seeds", type=int, default=1, help="render seeds per design")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--prompts", type=int, default=None, help="first N train prompts only")
    args = parser.parse_args()

    config = load_run_config(args.run / "config.json")
    spec = args.judge or config.judge
    loaded = load_judge(spec, dict(config.judge_opt))
    catalog = load_catalog(args.run / "library" / "object_info.json")
    negative = config.collect.negative
    args.out.mkdir(parents=True, exist_ok=True)

    table, _ = run_table(args.run / "collect")
    prompts = dict(
        zip(table.column("prompt_id").to_pylist(), table.column("prompt").to_pylist(), strict=True)
    )
    ids = sorted(prompts)[: args.prompts]
    texts = [prompts[i] for i in ids]

    # 1. sample GRPO's designs for the train prompts
    started = time.perf_counter()
    designer = PolicyDesigner(
        load_for_design(args.run / "grpo"),
        catalog,
        SamplingSettings(
            temperature=args.temperature,
            constrained=True,
            max_new_tokens=config.grpo.max_completion_length,
            batch_size=64,
            negative=negative,
        ),
    )
    samples = []
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start : start + CHUNK]
        seeds = [derive_seed("refine", i) for i in ids[start : start + CHUNK]]
        samples.extend(designer.sample(chunk, seeds, args.samples))
        print(f"sampled {min(start + CHUNK, len(texts))}/{len(texts)} prompts", flush=True)
    sample_seconds = time.perf_counter() - started

    # 2. judge the valid designs
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    items: list[JudgeItem] = []
    for index, sample in enumerate(samples):
        if not sample.valid or sample.workflow is None:
            continue
        prompt_id = ids[index // args.samples]
        template = RequestTemplate(sample.text, negative)
        for seed in rng.integers(0, SEED_LIMIT, args.seeds):
            api = template.fill(sample.prompt, int(seed))
            items.append(JudgeItem(sample.prompt, api, int(seed)))
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "prompt": sample.prompt,
                    "workflow_hash": design_hash(sample.workflow, catalog),
                    "workflow_api": json.dumps(api, separators=(",", ":"), ensure_ascii=False),
                    "workflow_text": sample.text,
                    "seed": int(seed),
                }
            )
    results = []
    for start in range(0, len(items), 256):
        results.extend(loaded.judge.score(items[start : start + 256]))
    judge_seconds = time.perf_counter() - started
    calls = len(items)
    errors = sum(r.error is not None for r in results)
    print(f"judged {calls} renders ({errors} errors) of {len(samples)} samples", flush=True)

    # 3. the run's triplets plus the new rows; a new ensemble with the run's settings
    new = _rows_table(table, rows, results, loaded.judge_id, negative)
    combined = pa.concat_tables([table, new], promote_options="default")
    data = args.out / "triplets.parquet"
    pq.write_table(combined, data)
    old = load_ensemble(args.run / "reward", catalog=catalog)
    started = time.perf_counter()
    train_ensemble(data, args.out / "reward", config.reward, catalog=catalog)
    reward_seconds = time.perf_counter() - started
    fresh = load_ensemble(args.out / "reward", catalog=catalog)
    gaps = {
        name: _gap(ensemble, rows, results)
        for name, ensemble in (("before", old), ("after (in training)", fresh))
    }

    # 4. GRPO again from SFT against the new ensemble, the run's settings otherwise
    started = time.perf_counter()
    grpo = replace(
        config.grpo,
        sft_dir=str(args.run / "sft"),
        reward_dir=str(args.out / "reward"),
        out=str(args.out / "grpo"),
        library_dir=str(args.run / "library" / "workflows"),
    )
    train_grpo(grpo)
    grpo_seconds = time.perf_counter() - started

    summary = {
        "samples": len(samples),
        "valid": sum(s.valid for s in samples),
        "distinct": len({r["workflow_hash"] for r in rows}),
        "judge_calls": calls,
        "judge_errors": errors,
        "gap_before": gaps["before"],
        "gap_after": gaps["after (in training)"],
        "seconds": {
            "sample": round(sample_seconds, 1),
            "judge": round(judge_seconds, 1),
            "reward": round(reward_seconds, 1),
            "grpo": round(grpo_seconds, 1),
        },
        "machine": describe_machine(),
        "command": command_line(),
    }
    (args.out / "refine.json").write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    print(json.dumps(summary, indent=1))


def _rows_table(
    like: Any, rows: list[dict[str, Any]], results: list[Any], judge_id: str, negative: str
) -> Any:
    """The new judgements as a table with the export's columns (item numbers continue)."""
    first = max(like.column("item").to_pylist()) + 1
    names = [n for n in like.column_names if n.startswith("score_")]
    now = int(time.time() * 1e6)
    columns: dict[str, list[Any]] = {n: [] for n in like.column_names}
    for offset, (row, result) in enumerate(zip(rows, results, strict=True)):
        values = {
            **row,
            "item": first + offset,
            "negative": negative,
            "judge_id": judge_id,
            "error": result.error,
            "attempts": 1,
            "judged_at": now,
        }
        for name in names:
            scores = result.scores or {}
            values[name] = scores.get(name.removeprefix("score_"))
        for name in like.column_names:
            columns[name].append(values[name])
    return pa.table(columns, schema=like.schema)


def _gap(ensemble: Any, rows: list[dict[str, Any]], results: list[Any]) -> float:
    """Mean (ensemble mean prediction - judged training score, in the ensemble's own units)
    over the new judged rows."""
    scored = [(row, r.scores) for row, r in zip(rows, results, strict=True) if r.scores]
    predicted = ensemble.predict_detail(
        [row["prompt"] for row, _ in scored], [row["workflow_text"] for row, _ in scored]
    ).mean
    judged = np.array([ensemble.training_score(scores) for _, scores in scored])
    return round(float(np.nanmean(predicted - judged)), 3)


if __name__ == "__main__":
    main()
