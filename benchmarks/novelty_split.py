"""Are a designer's new workflows as good as its library ones? Each method's judged designs
split into those in the run's library and those not.

Usage: ``python benchmarks/novelty_split.py --run RUN [--methods grpo,best_of_8,...]``.
Reads ``RUN/evaluate/designs.jsonl`` (each method's design for each held-out prompt, with
the judge's scores) and ``RUN/library``, and prints per method how many of its valid designs
are library workflows (the same design key, `textform.design_hash`, as the report's "not in
library") and the mean held-out score of each part. Designs whose renders all failed have
no score and are counted apart.

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

from flowforge.evaluate.judging import check_design
from flowforge.workflow.library import load_workflow_dir
from flowforge.workflow.schema import load_catalog
from flowforge.workflow.textform import to_text


def library_keys(run: Path) -> set[str]:
    """The design keys of the run's library workflows."""
    catalog = load_catalog(run / "library" / "object_info.json")
    workflows = load_workflow_dir(run / "library" / "workflows").values()
    keys = {check_design(to_text(w, catalog)[0], catalog).key for w in workflows}
    return {key for key in keys if key is not None}


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
    library = library_keys(args.run)
    rows = [
        json.loads(line)
        for line in (args.run / "evaluate" / "designs.jsonl").read_text("utf-8").splitlines()
    ]
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
