"""Ensemble pairing's table on a finished run: the last refine round's ensemble scoring every
train prompt against the library and the judged designs, as the re-paired SFT does, once
with `RewardEnsemble.predict_table` and once row by row with `predict` (what the pairing did
before the table).

Usage: ``python benchmarks/pairing_table.py --run RUN [--prompts N]``. RUN is a finished
``flowforge run`` with ``[refine] refit_sft`` and ``sft_designs`` (the default); N limits the
prompts (default: all train prompts). Prints the seconds of each, the largest difference
between the two tables, and how many of the SFT's pairs (``sft.pairs`` scaled to N prompts,
the run's pairing temperature and ``refine.sft_top_k``) the difference moved, with the
machine and the command. Each way reads and validates the workflow texts afresh (a new
ensemble), as the pairing does. Results: docs/benchmarks.md ("Ensemble pairing's table").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from machine import stamped

from flowforge.data.prompts import load_prompts
from flowforge.pipeline.config import load_run_config
from flowforge.pipeline.layout import REFINE, REWARD_DIR, round_dir
from flowforge.pipeline.refine import JUDGED
from flowforge.policy.examples import preferred_pairs
from flowforge.policy.sft import library_texts, pairing_candidates
from flowforge.reward.ensemble import load_ensemble
from flowforge.workflow.library import load_workflow_dir
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--prompts", type=int, default=None, help="the first N train prompts")
    args = parser.parse_args()
    config = load_run_config(args.run / "config.json")
    rounds = config.refine.rounds
    catalog = load_catalog(args.run / "library" / "object_info.json")
    library = load_workflow_dir(args.run / "library" / "workflows").values()
    judged = [str(args.run / REFINE / round_dir(k) / JUDGED) for k in range(1, rounds + 1)]
    texts = pairing_candidates(library_texts(library, catalog), judged)
    prompts = [prompt.text for prompt in load_prompts("train")][: args.prompts]
    reward_dir = args.run / REFINE / round_dir(rounds) / REWARD_DIR
    print(f"{len(prompts)} prompts x {len(texts)} workflows, ensemble {reward_dir}", flush=True)

    started = time.perf_counter()
    table = load_ensemble(reward_dir, catalog=catalog).predict_table(prompts, texts)
    table_seconds = time.perf_counter() - started
    print(f"predict_table: {table_seconds:.1f} s", flush=True)
    started = time.perf_counter()
    ensemble = load_ensemble(reward_dir, catalog=catalog)
    rows = np.array([ensemble.predict([prompt] * len(texts), texts) for prompt in prompts])
    rows_seconds = time.perf_counter() - started
    print(f"predict row by row: {rows_seconds:.1f} s", flush=True)

    pairs = config.sft.pairs * len(prompts) // len(load_prompts("train"))
    temperature, top_k, seed = config.sft.pairing_temperature, config.refine.sft_top_k, 0
    by_table = preferred_pairs(texts, prompts, table, pairs, temperature, seed, top_k)
    by_rows = preferred_pairs(texts, prompts, rows, pairs, temperature, seed, top_k)
    moved = sum(a != b for a, b in zip(by_table, by_rows, strict=True))
    results = {
        "run": str(args.run),
        "prompts": len(prompts),
        "workflows": len(texts),
        "members": ensemble.config.members,
        "predict_table_seconds": round(table_seconds, 1),
        "predict_rows_seconds": round(rows_seconds, 1),
        "max_abs_difference": float(np.abs(table - rows).max()),
        "pairs": pairs,
        "pairs_moved": moved,
    }
    print(json.dumps(stamped(results), indent=1))


if __name__ == "__main__":
    main()
