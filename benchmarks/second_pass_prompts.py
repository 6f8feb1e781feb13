"""What guides a design's second pass? For each method's judged designs, the positive
conditioning of its hires pass and of its refiner: the prompt, the base pass's negative, or
neither (an encoder of its own without the prompt).

Usage: ``python benchmarks/second_pass_prompts.py --run RUN [--methods grpo,best_of_8,...]``
(or ``--designs DIR`` for any evaluation's output). Reads ``designs.jsonl`` and the run's
catalog (``RUN/library/object_info.json``; the shipped one without a run).

Why: the simulated world prices a second pass guided by the base's negative (docs/sim.md,
"A second pass guided by the negative undoes the image"), but a second pass guided by an
encoder without the prompt is priced as if it carried the prompt: a blind spot a policy
could learn to use, as GRPO once learnt the two others the world now prices. This counts
how often a designer writes such passes, so a drift into the blind spot shows.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.evaluate.report import read_designs
from flowforge.workflow.anatomy import AnatomyError, read_anatomy, source
from flowforge.workflow.graph import Node, Workflow
from flowforge.workflow.schema import default_catalog, load_catalog
from flowforge.workflow.textform import Bindings, from_text

PROMPT_MARK = "qqpromptqq"  # bound to $PROMPT: a text holding it carries the prompt
NEGATIVE_MARK = "qqnegativeqq"


def guidance(workflow: Workflow, sampler: Node) -> str:
    """'prompt', 'negative' or 'neither': what the positive texts feeding `sampler` hold."""
    encoder = source(workflow, sampler, "positive")
    texts = [value for _, value in encoder.inputs if isinstance(value, str)]
    if any(PROMPT_MARK in text for text in texts):
        return "prompt"
    if any(NEGATIVE_MARK in text for text in texts):
        return "negative"
    return "neither"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a `flowforge run` directory")
    parser.add_argument("--designs", type=Path, help="an evaluation's output directory")
    parser.add_argument(
        "--methods",
        default="grpo_start,grpo,grpo_wsel,best_of_8,comfygen_ft,sft,best_fixed",
        help="methods of designs.jsonl, comma-separated (missing ones are skipped)",
    )
    args = parser.parse_args()
    if (args.run is None) == (args.designs is None):
        parser.error("give --run RUN or --designs DIR")
    folder = args.designs or args.run / "evaluate"
    catalog = (
        load_catalog(args.run / "library" / "object_info.json")
        if args.run is not None
        else default_catalog()
    )
    rows = read_designs(folder)
    bindings = Bindings.request(PROMPT_MARK, NEGATIVE_MARK, 0)
    print(f"`{command_line()}`; {describe_machine()}")
    print()
    print("| method | valid designs | with hires | hires guided by: prompt / negative / neither |"
          " with refiner | refiner guided by: prompt / negative / neither |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        valid = [r for r in rows if r["method"] == method and r["valid"]]
        if not valid:
            continue
        hires: Counter[str] = Counter()
        refiner: Counter[str] = Counter()
        for row in valid:
            workflow = from_text(row["text"], bindings, catalog)
            try:
                anatomy = read_anatomy(workflow)
            except AnatomyError:
                continue
            if anatomy.hires is not None:
                hires[guidance(workflow, anatomy.hires)] += 1
            if anatomy.refiner is not None:
                refiner[guidance(workflow, anatomy.refiner)] += 1

        def split(counts: Counter[str]) -> str:
            return " / ".join(str(counts[kind]) for kind in ("prompt", "negative", "neither"))

        print(
            f"| {method} | {len(valid)} | {sum(hires.values())} | {split(hires)} | "
            f"{sum(refiner.values())} | {split(refiner)} |"
        )


if __name__ == "__main__":
    main()
