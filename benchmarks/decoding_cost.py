"""Cost of constrained and guided decoding against plain decoding at the same batch size.

Usage: ``python benchmarks/decoding_cost.py [--batch 64] [--tokens 256] [--repeats 5]
[--policy DIR --reference DIR] [--weight 1.5] [--threads N]``.

Four modes generate from the same left-padded batch of train prompts: plain sampling, with the
schema constraint, with guidance (a second model as the reference, w = ``--weight``), and
with both (``[guidance, constraint]``). Every mode runs exactly ``--tokens`` steps (``<eos>``
does not stop generation; a constrained row that has finished keeps writing ``<eos>``), so
the cost per step compares like with like. The modes run interleaved, ``--repeats`` times,
and the median is reported (the machine's 2 cores are shared). Also printed: the time spent
inside the processors, and the share of constrained (row, step) pairs still inside a
workflow (a finished row costs the constraint almost nothing).

Models: by default two untrained policies of the default shape (``PolicyModelConfig()``,
seeds 0 and 1) with a tokenizer fitted on a 300-workflow library; per-token cost does not
depend on training. ``--policy``/``--reference`` measure saved policy directories instead.
Targets (issue 5): guided <= 1.6x plain, constrained <= 1.2x plain.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning OpenMP threads on a shared machine wait for threads
# another process has descheduled (docs/policy.md, "Pitfalls met").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time
from pathlib import Path

import torch
from machine import command_line, describe_machine
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel

from flowforge.data.prompts import load_prompts
from flowforge.policy.constraint import GrammarConstraint
from flowforge.policy.grammar import Phase, TextFormGrammar
from flowforge.policy.guidance import GuidanceProcessor
from flowforge.policy.model import PolicyModelConfig, build_tiny_model, load_policy
from flowforge.policy.tokenizer import PolicyTokenizer, new_tokenizer
from flowforge.policy.vocab import fit_vocab
from flowforge.workflow.library import build_library, load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import to_text

MODES = ("plain", "constrained", "guided", "guided+constrained")


class Timed(LogitsProcessor):
    """Runs `inner` and adds up the seconds it takes (and, for a constraint, active rows)."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.active = 0
        self.rows = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        start = time.perf_counter()
        out: torch.FloatTensor = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        if isinstance(self.inner, GrammarConstraint):
            states = self.inner.states
            self.active += sum(state.phase != Phase.DONE for state in states)
            self.rows += len(states)
        return out


def models(args: argparse.Namespace) -> tuple[PreTrainedModel, PreTrainedModel, PolicyTokenizer]:
    if args.policy is not None:
        policy, tokenizer = load_policy(args.policy)
        reference, _ = load_policy(args.reference or args.policy)
        return policy, reference, tokenizer
    catalog = default_catalog()
    entries = build_library(load_seed_library(), catalog, 300, 0)
    texts = [to_text(entry.workflow, catalog)[0] for entry in entries]
    prompts = [prompt.text for prompt in load_prompts("train")]
    tokenizer = new_tokenizer(fit_vocab(texts, prompts, catalog))
    shape = PolicyModelConfig()
    return build_tiny_model(tokenizer, shape, 0), build_tiny_model(tokenizer, shape, 1), tokenizer


def run_mode(
    mode: str,
    policy: PreTrainedModel,
    processors: dict[str, list[Timed]],
    batch: dict[str, torch.Tensor],
    config: GenerationConfig,
) -> tuple[float, float]:
    """Wall seconds of one generate call and the seconds spent inside its processors."""
    timed = processors[mode]
    for probe in timed:
        probe.seconds = 0.0
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        policy.generate(  # type: ignore[operator]
            **batch, generation_config=config, logits_processor=LogitsProcessorList(timed)
        )
    return time.perf_counter() - start, sum(probe.seconds for probe in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weight", type=float, default=1.5)
    parser.add_argument("--policy", type=Path, default=None)
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    policy, reference, tokenizer = models(args)
    grammar = TextFormGrammar(tokenizer, default_catalog())
    constraint = Timed(GrammarConstraint(grammar, args.tokens))
    guidance = Timed(GuidanceProcessor(reference, args.weight, tokenizer.pad_id))
    processors = {
        "plain": [],
        "constrained": [constraint],
        "guided": [guidance],
        "guided+constrained": [guidance, constraint],
    }
    prompts = [prompt.text for prompt in load_prompts("train")][: args.batch]
    segments = [tokenizer.prompt_segment(prompt) for prompt in prompts]
    batch = dict(
        tokenizer.hf(segments, add_special_tokens=False, padding=True, return_tensors="pt")
    )
    config = GenerationConfig(
        do_sample=True,
        top_k=0,  # plain ancestral sampling (None would mean generate's default top-k 50)
        max_new_tokens=args.tokens,
        pad_token_id=tokenizer.pad_id,
        eos_token_id=None,  # every mode runs exactly --tokens steps
    )
    for mode in MODES:  # warm-up (first-call allocations, grammar memos), not counted
        run_mode(mode, policy, processors, batch, config)
    load_before = os.getloadavg()[0]
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    inside: dict[str, list[float]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES[repeat % 4 :] + MODES[: repeat % 4]:  # rotate to spread load noise
            wall, spent = run_mode(mode, policy, processors, batch, config)
            walls[mode].append(wall)
            inside[mode].append(spent)
    report(args, walls, inside, constraint, load_before)


def report(
    args: argparse.Namespace,
    walls: dict[str, list[float]],
    inside: dict[str, list[float]],
    constraint: Timed,
    load_before: float,
) -> None:
    plain = statistics.median(walls["plain"])
    print(f"batch {args.batch} x {args.tokens} tokens, {args.repeats} repeats, medians:")
    print(f"{'mode':<20} {'s/run':>7} {'ms/step':>8} {'x plain':>8} {'in processors':>14}")
    for mode in MODES:
        wall = statistics.median(walls[mode])
        spent = statistics.median(inside[mode])
        print(
            f"{mode:<20} {wall:7.2f} {1000 * wall / args.tokens:8.2f} {wall / plain:8.2f}"
            f" {spent:7.2f} s ({spent / plain:4.0%})"
        )
    print(f"runs (s): { {mode: [round(w, 2) for w in walls[mode]] for mode in MODES} }")
    share = constraint.active / max(constraint.rows, 1)
    print(f"constrained (row, step) pairs still inside a workflow: {share:.0%}")
    print(f"load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(
        f"torch threads: {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
