"""Tiny policy components shared by the policy tests: vocabulary, model, forcing processor."""

from __future__ import annotations

from functools import cache

import torch
from transformers import LogitsProcessor, PreTrainedModel

from flowforge.data.prompts import load_prompts
from flowforge.policy.model import PolicyModelConfig, build_tiny_model
from flowforge.policy.tokenizer import PolicyTokenizer, new_tokenizer
from flowforge.policy.vocab import WorkflowVocab, fit_vocab
from flowforge.workflow.library import build_library, load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import to_text

CATALOG = default_catalog()
#: A model that builds and steps in milliseconds.
TINY = PolicyModelConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)


@cache
def library_texts(size: int = 150) -> tuple[str, ...]:
    entries = build_library(load_seed_library(), CATALOG, size, 0)
    return tuple(to_text(entry.workflow, CATALOG)[0] for entry in entries)


@cache
def train_prompts() -> tuple[str, ...]:
    return tuple(prompt.text for prompt in load_prompts("train"))


@cache
def tiny_vocab() -> WorkflowVocab:
    return fit_vocab(library_texts(), train_prompts(), CATALOG)


def tiny_tokenizer() -> PolicyTokenizer:
    return new_tokenizer(tiny_vocab())


class ForceText(LogitsProcessor):
    """Makes row r of a batch write `ids[r]` then <eos>: a stand-in for a trained policy,
    and a check that processors given to sampling reach ``generate``."""

    def __init__(self, ids: list[list[int]], eos_id: int) -> None:
        self.ids = [[*row, eos_id] for row in ids]
        self.start: int | None = None
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(self.ids):
            forced[row, ids[step] if step < len(ids) else self.eos_id] = 0.0
        return forced  # type: ignore[return-value]


def memorize(
    tokenizer: PolicyTokenizer, prompt: str, text: str, steps: int = 150
) -> PreTrainedModel:
    """A tiny model trained (plain AdamW, full sequence) until greedy decoding writes `text`."""
    model = build_tiny_model(tokenizer, TINY, seed=0)
    segment = tokenizer.hf(tokenizer.prompt_segment(prompt), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[*segment, *tokenizer.encode_workflow(text), tokenizer.eos_id]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model
