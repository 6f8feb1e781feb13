"""Throughput of the reward ensemble's prediction API, as GRPO calls it.

Scores (prompt, workflow text) pairs with `RewardEnsemble.predict` in batches: groups of
`--group` workflows per prompt (a GRPO group), workflows from a freshly built library (so
none is in the model's design cache), prompts from the held-out split. Prompt embeddings are
computed before timing (the encoder caches them per text; GRPO sees each training prompt
many times). Three passes per batch size:

- **new designs**: every workflow text is new to the ensemble (parse, validate against the
  catalog, tokenize, then the members' forward): the worst case, early GRPO;
- **cached designs**: the same pairs again (the forward only): a converging policy;
- **half repeated**: in every group half the designs were scored before, half are new.

Run: ``python benchmarks/reward_throughput.py --model DIR [--pairs 8192] [--group 8]
[--batch 64,512,4096]``
"""

from __future__ import annotations

import argparse
import os
import time

from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.reward.backbone import MiniLMBackbone
from flowforge.reward.ensemble import RewardEnsemble, load_ensemble
from flowforge.workflow.library import build_library, load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import Bindings, from_text, to_text


def _pairs(n: int, group: int, library_seed: int) -> tuple[list[str], list[str]]:
    entries = build_library(load_seed_library(), default_catalog(), n, library_seed)
    texts = [to_text(entry.workflow)[0] for entry in entries]
    prompts = [p.text for p in load_prompts("heldout")]
    return [prompts[(i // group) % len(prompts)] for i in range(n)], texts


def _rate(
    ensemble: RewardEnsemble, prompts: list[str], texts: list[str], batch: int
) -> tuple[float, float]:
    """Pairs per wall second, and per CPU second of this process (all its threads): on a
    shared machine the second is what the cores it got delivered, free of the waiting."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch):
        ensemble.predict(prompts[i : i + batch], texts[i : i + batch])
    return len(texts) / (time.perf_counter() - start), len(texts) / (time.process_time() - cpu)


def _breakdown(ensemble: RewardEnsemble, texts: list[str]) -> str:
    """Microseconds per new design: parse, validate, tokenize + encode (where cold time goes)."""
    from flowforge.reward.features import PROMPT_MARK
    from flowforge.workflow.validate import validate

    bindings = Bindings.request(PROMPT_MARK, "", 0)
    start = time.perf_counter()
    workflows = [from_text(text, bindings) for text in texts]
    parsed = time.perf_counter()
    for workflow in workflows:
        validate(workflow, ensemble.catalog)
    validated = time.perf_counter()
    for text, workflow in zip(texts, workflows, strict=True):
        ensemble.backbone.design_of(text, workflow)
    done = time.perf_counter()
    per = 1e6 / len(texts)
    parse, check, tokens = (
        (parsed - start) * per,
        (validated - parsed) * per,
        (done - validated) * per,
    )
    return (
        f"per new design: from_text {parse:.0f} us, validate {check:.0f} us, "
        f"tokens + vocabulary {tokens:.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model directory (reward train)")
    parser.add_argument("--pairs", type=int, default=8192)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--batch", default="64,512,4096")
    parser.add_argument("--library-seed", type=int, default=12345)
    args = parser.parse_args()
    print(f"building {args.pairs:,} distinct workflows (not timed) ...", flush=True)
    prompts, texts = _pairs(args.pairs, args.group, args.library_seed)
    ensemble = load_ensemble(args.model)
    if isinstance(ensemble.backbone, MiniLMBackbone):  # embeddings cached before timing
        ensemble.backbone.encoder.encode(list(dict.fromkeys(prompts)))
    print(f"model: {args.model} ({ensemble.config.members} members, {ensemble.config.backbone})")
    for batch in (int(b) for b in args.batch.split(",")):
        ensemble.clear_design_cache()
        cold = _rate(ensemble, prompts, texts, batch)
        warm = _rate(ensemble, prompts, texts, batch)
        half = args.group // 2  # every group: half its designs scored before, half new
        mixed_texts = [
            texts[i % args.group] if i % args.group < half else texts[i] for i in range(len(texts))
        ]
        ensemble.clear_design_cache()
        mixed = _rate(ensemble, prompts, mixed_texts, batch)
        print(
            f"batch {batch:5d}: new designs {cold[0]:7,.0f} pairs/s ({cold[1]:7,.0f}/CPU s) | "
            f"cached designs {warm[0]:7,.0f} ({warm[1]:7,.0f}) | "
            f"half repeated {mixed[0]:7,.0f} ({mixed[1]:7,.0f})"
        )
    print(_breakdown(ensemble, texts[:2000]))
    print(f"torch threads while predicting: {ensemble.config.threads} (the model's setting)")
    print(f"load average (1, 5, 15 min; 2 cores shared with other jobs): {os.getloadavg()}")
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
