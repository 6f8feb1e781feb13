"""Does a designer read its prompt? The ensemble's view of designs on their own prompts
against the same designs on shuffled prompts.

Usage: ``python benchmarks/prompt_reading.py --run RUN [--methods grpo,best_of_8,...]
[--shuffles 5]``. Reads ``RUN/evaluate/designs.jsonl`` (what ``flowforge evaluate`` wrote:
each method's design for each held-out prompt) and the run's final reward ensemble (after
refine rounds the last round's refitted one, which the evaluation used), and prints per
method the ensemble's mean prediction (member mean) for each design with its own prompt,
the same with the designs shuffled across prompts, and the difference.

Why: a designer whose designs suit their prompts scores higher on its own prompts than on
someone else's; one that writes the same kind of design whatever the prompt shows no
difference. It is the ensemble's judgement, not the judge's: it asks whether a policy learnt
what the ensemble knows per prompt, no rendering needed. A fixed workflow reads 0 by
construction; the library oracle shows how much per-prompt choice there is to find.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from machine import command_line, describe_machine

from flowforge.evaluate.report import read_designs
from flowforge.pipeline.layout import final_models
from flowforge.reward.ensemble import load_ensemble
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a `flowforge run` directory")
    parser.add_argument(
        "--methods",
        default="best_fixed,retrieval,comfygen_ft,sft,grpo_start,grpo,grpo_wsel,best_of_8,oracle",
        help="methods of designs.jsonl, comma-separated (missing ones are skipped)",
    )
    parser.add_argument("--shuffles", type=int, default=5, help="shuffles averaged over")
    args = parser.parse_args()
    catalog = load_catalog(args.run / "library" / "object_info.json")
    reward = final_models(args.run).reward
    ensemble = load_ensemble(reward, catalog=catalog)
    rows = read_designs(args.run / "evaluate")
    rng = np.random.default_rng(0)

    def mean_prediction(prompts: list[str], texts: list[str]) -> float:
        return float(np.nanmean(ensemble.predict_detail(prompts, texts).mean))

    print("| method | own prompt | shuffled prompts | difference | distinct designs |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        chosen = [r for r in rows if r["method"] == method and r["valid"]]
        if not chosen:
            continue
        prompts = [r["prompt"] for r in chosen]
        texts = [r["text"] for r in chosen]
        own = mean_prediction(prompts, texts)
        orders = [rng.permutation(len(texts)) for _ in range(args.shuffles)]
        shuffled = float(np.mean([mean_prediction(prompts, [texts[i] for i in o]) for o in orders]))
        print(
            f"| {method} | {own:.3f} | {shuffled:.3f} | {own - shuffled:+.3f} | {len(set(texts))} |"
        )
    print(f"\nensemble: {reward}\nmachine: {describe_machine()}\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
