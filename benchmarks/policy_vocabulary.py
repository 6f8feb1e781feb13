"""Does the SFT policy write valid workflows, and does it use the whole vocabulary?

Usage: ``python benchmarks/policy_vocabulary.py [--policy /tmp/flowforge-bench/sft50k]
[--prompts 500] [--temperature 0.7] [--seed 0]`` (default: `design`'s temperature).
Samples one workflow per held-out prompt (unconstrained, plain temperature sampling) and
prints: the share that parse and validate (target >= 95%), the share that end with <eos>,
the most common errors; distinct workflows and the share not in the policy's training
library; and vocabulary use against the library the policy was trained on (rebuilt from its
run config): checkpoints, LoRAs, samplers, schedulers and structural options (hires fix
kind, refiner, final upscaler, model patches, CLIP skip, VAE loader, negative embeddings,
LoRA count). Then the machine and the command.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see sft_speed.py

import argparse
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.policy.design import DESIGN_TEMPERATURE
from flowforge.policy.model import load_policy, read_run_config
from flowforge.policy.sample import sample_workflows
from flowforge.workflow.anatomy import AnatomyError, embeddings_in, read_anatomy
from flowforge.workflow.canonical import workflow_hash
from flowforge.workflow.graph import Workflow
from flowforge.workflow.library import build_library, load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import Bindings, from_text, to_text


def options(workflow: Workflow) -> set[str]:
    """What a workflow uses: model files, sampler settings and structural options."""
    found = {f"class:{node.class_type}" for node in workflow}
    for node in workflow:
        for name, value in node.inputs:
            if name in ("ckpt_name", "lora_name", "sampler_name", "scheduler"):
                found.add(f"{name}:{value}")
    try:
        anatomy = read_anatomy(workflow)
    except AnatomyError:
        return found | {"structure:unreadable"}
    found.add(f"structure:hires={anatomy.hires_kind}")
    found.add(f"structure:refiner={anatomy.refiner is not None}")
    found.add(f"structure:final_upscale={anatomy.final_upscale is not None}")
    found.add(f"structure:loras={len(anatomy.loras)}")
    found |= {f"structure:patch={n.class_type}" for n in anatomy.model_chain}
    found |= {f"structure:clip={n.class_type}" for n in anatomy.clip_chain}
    negative = anatomy.negative.get("text")
    if isinstance(negative, str):
        found.add(f"structure:negative_embeddings={len(embeddings_in(negative))}")
    return found


def error_kind(error: str) -> str:
    """A short kind for an error message: no line number, node ids or values."""
    text = re.sub(r"^line \d+: ", "", error)
    return " ".join(re.sub(r"'[^']*'|\d+", "_", text).split()[:7])


def coverage(used: set[str], available: set[str], prefix: str) -> str:
    wanted = {o for o in available if o.startswith(prefix)}
    missing = sorted(o.removeprefix(prefix) for o in wanted - used)
    shown = f" (missing: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''})"
    return f"{len(wanted & used)}/{len(wanted)}" + (shown if missing else "")


def library_of(policy: Path) -> list[Workflow]:
    record = read_run_config(policy) or {}
    config = record.get("config", {})
    catalog = default_catalog()
    size, seed = int(config.get("library_size", 20_000)), int(config.get("library_seed", 0))
    return [e.workflow for e in build_library(load_seed_library(), catalog, size, seed)]


def union(sets: Iterable[set[str]]) -> set[str]:
    return set().union(*sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", type=Path, default=Path("/tmp/flowforge-bench/sft50k"))
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=DESIGN_TEMPERATURE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, tokenizer = load_policy(args.policy)
    prompts = [p.text for p in load_prompts("heldout")][: args.prompts]
    start = time.perf_counter()
    samples = sample_workflows(
        model, tokenizer, prompts, temperature=args.temperature, seed=args.seed
    )
    seconds = time.perf_counter() - start
    valid = [s for s in samples if s.valid]
    print(
        f"{len(samples)} held-out prompts, temperature {args.temperature}, unconstrained: "
        f"{len(valid) / len(samples):.1%} valid, "
        f"{sum(s.finished for s in samples) / len(samples):.1%} ended with <eos> "
        f"({seconds:.0f} s, {seconds / len(samples) * 1000:.0f} ms per workflow)"
    )
    kinds = Counter(error_kind(s.error) for s in samples if s.error)
    for kind, count in kinds.most_common(5):
        print(f"  {count:4d} x {kind}")
    library = library_of(args.policy)
    bindings = Bindings.request("p", "", 0)
    library_hashes = {workflow_hash(from_text(to_text(w)[0], bindings)) for w in library}
    designed = [s.workflow for s in valid if s.workflow is not None]
    hashes = {workflow_hash(from_text(to_text(w)[0], bindings)) for w in designed}
    print(
        f"distinct valid workflows: {len(hashes)}; not in the training library: "
        f"{sum(h not in library_hashes for h in hashes) / max(len(hashes), 1):.1%}"
    )
    available, used = union(options(w) for w in library), union(options(w) for w in designed)
    for label, prefix in (
        ("checkpoints", "ckpt_name:"),
        ("LoRAs", "lora_name:"),
        ("samplers", "sampler_name:"),
        ("schedulers", "scheduler:"),
        ("node classes", "class:"),
        ("structural options", "structure:"),
    ):
        print(f"{label} used / in the library: {coverage(used, available, prefix)}")
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
