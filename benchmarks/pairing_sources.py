"""What did the re-paired SFT of a run learn from: library workflows or judged designs?

Usage: ``python benchmarks/pairing_sources.py --run RUN``. Reads the run record of the
SFT the kept GRPO policy started from (``RUN/refine/round-N/sft/flowforge_run.json``, the
re-paired SFT of `[refine] refit_sft`), draws its (prompt, workflow) pairs again exactly as
it did (`flowforge.policy.sft.sft_examples`: the same candidates, ensemble, temperature,
top-k and seed; no training), and prints how many pairs and distinct paired workflows are
library workflows and how many are designs the rounds judged, beside the share of the kept
policy's held-out designs that are new (``RUN/evaluate/report.json``, when there).

Why: the wide kept policy's designs went back to the library on sim world 0 (33-44% new
against 96-100% at the default width; docs/evaluation.md, "What was tried"). Its re-paired
SFT learns the pairs this prints; a policy that can copy them exactly writes library
workflows as often as the pairs hold them, one too narrow to copy them writes near-misses,
which count as new. The paths in the record are the run's own: run it where the run was
made.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.pipeline.layout import REPORT_JSON, final_models
from flowforge.policy.config import SFTRunConfig
from flowforge.policy.directory import RUN_FILE
from flowforge.policy.sft import sft_examples
from flowforge.workflow.schema import load_catalog

NOVELTY_METHODS = ("grpo_start", "grpo", "grpo_wsel", "best_of_8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    args = parser.parse_args()
    start = final_models(args.run).start
    record_path = start / RUN_FILE
    if not record_path.is_file():
        raise SystemExit(f"{record_path}: no SFT run record (has the run finished refine?)")
    record = json.loads(record_path.read_text("utf-8"))
    config = SFTRunConfig.from_json(record["config"])
    if config.pairing != "ensemble":
        raise SystemExit(f"{start} was paired {config.pairing!r}: every pair is the library's")
    catalog = load_catalog(config.object_info)
    texts, examples, stats = sft_examples(config, catalog, progress=True)
    # the candidates start with the library's workflows, unless it offered none
    library = set(texts[: stats["library_workflows"]] if config.library_share > 0 else ())
    paired = [e.workflow_text for e in examples]
    distinct = set(paired)
    from_library = sum(text in library for text in paired)
    distinct_library = len(distinct & library)
    print(f"re-paired SFT: {start}")
    offered = sum(text in library for text in texts)
    print(f"candidates: {offered:,} library workflows, {len(texts) - offered:,} judged designs")
    cap = f", library share at most {config.library_share:.0%}" if config.library_share < 1 else ""
    print(f"pairing: temperature {config.pairing_temperature}, top-k {config.pairing_top_k}{cap}")
    print("| pairs | from the library | distinct workflows | of them library |")
    print("|---|---|---|---|")
    print(
        f"| {len(paired):,} | {from_library:,} ({from_library / len(paired):.0%}) | "
        f"{len(distinct):,} | {distinct_library:,} ({distinct_library / len(distinct):.0%}) |"
    )
    recorded = record["data"].get("library_pair_share")  # runs since session 36 keep it
    if recorded is not None and abs(recorded - from_library / len(paired)) > 1e-9:
        raise SystemExit(f"{record_path}: its library_pair_share {recorded} is not these pairs'")
    report = args.run / "evaluate" / REPORT_JSON
    if report.is_file():
        methods = {m["name"]: m for m in json.loads(report.read_text("utf-8"))["methods"]}
        print("\nheld-out designs not in the library (report.json):")
        for name in NOVELTY_METHODS:
            if name in methods and methods[name].get("not_in_library") is not None:
                print(f"- {name}: {methods[name]['not_in_library']:.0%}")
    print(f"\nrun: {args.run}\nmachine: {describe_machine()}\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
