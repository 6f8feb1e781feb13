"""Are a designer's new workflows as good as its library ones? Each method's judged designs
split into those in the run's library and those not.

Usage: ``python benchmarks/novelty_split.py --run RUN [--methods grpo,best_of_8,...]``.
Reads ``RUN/evaluate/designs.jsonl`` (each method's design for each held-out prompt, with
the judge's scores) and ``RUN/library``, and prints per method how many of its valid designs
are library workflows (the report's own library index decides, as for "not in library")
and the mean held-out score of each part. Designs whose renders all failed have no score
and are counted apart.

Why: the report's "not in library" share says how much a policy invents, its held-out score
how well it designs; neither says whether the inventions are any good. A policy whose new
designs score far below its library picks is being led off the library by an ensemble that
overrates what it has not seen judged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from machine import command_line, describe_machine

from flowforge.evaluate.compare import library_index
from flowforge.evaluate.report import read_designs
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a `flowforge run` directory")
    parser.add_argument(
        "--methods",
        default="grpo_start,grpo,grpo_w0.5,grpo_wsel,best_of_8",
        help="methods of designs.jsonl, comma-separated (missing ones are skipped)",
    )
    args = parser.parse_args()
    scorer = json.loads((args.run / "config.json").read_text("utf-8"))["evaluate"]["heldout_scorer"]
    catalog = load_catalog(args.run / "library" / "object_info.json")
    library = library_index(args.run / "library" / "workflows", catalog)[1].keys
    rows = read_designs(args.run / "evaluate")
    header = "library designs | their held-out score | new designs | their held-out score"
    print(f"| method | {header} | unscored |")
    print("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        chosen = [r for r in rows if r["method"] == method and r["valid"]]
        if not chosen:
            continue
        parts: dict[bool, list[float]] = {True: [], False: []}
        unscored = 0
        for row in chosen:
            scores = [s[scorer] for s in row["scores"] if s and scorer in s]
            if not scores:
                unscored += 1
                continue
            parts[row["key"] in library].append(float(np.mean(scores)))

        def mean(values: list[float]) -> str:
            return f"{np.mean(values):.3f}" if values else "-"

        old, new = parts[True], parts[False]
        print(f"| {method} | {len(old)} | {mean(old)} | {len(new)} | {mean(new)} | {unscored} |")
    print(f"\nrun: {args.run}\nmachine: {describe_machine()}\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
