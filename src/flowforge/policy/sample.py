"""Sampling workflows from a policy with ``model.generate``.

Prompts are expanded ``n`` times, cut into batches, left-padded (so every row's next token
is at the last position) and decoded with plain ancestral sampling: temperature only, no
top-k / top-p (those would hide how well the policy itself knows the vocabulary).

Decoding hooks: `logits_processors` are handed to ``generate`` as one `LogitsProcessorList`
and run in list order on the *raw* next-token logits of the generated part, after
``generate``'s own processors and before temperature. That is where the schema constraint
(mask tokens that cannot continue a valid workflow) and guidance between two models
(``logits_ref + w * (logits_policy - logits_ref)``) plug in; compose them as
``[guidance, constraint]`` so the mask is applied last. `grammar` does that for the
constraint: given a ``TextFormGrammar``, a `GrammarConstraint` with ``max_new_tokens`` as
its budget runs after `logits_processors`, so every sample finishes and validates.

A processor receives ``input_ids`` of shape (rows, prompt + generated so far), left-padded
prompt included; the generated part starts at the padded prompt length, the same for every
row of a batch (the width of ``input_ids`` at a processor's first call of a ``generate``).
Finished rows are continued with ``<pad>``.

Every sample is parsed with ``from_text`` (placeholders filled from
``Bindings.request(prompt, negative, seed)``) and validated against the catalog
(``sampled.py``, shared with the numpy sampler).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
)

from flowforge.workflow.schema import Catalog, default_catalog

from .constraint import Grammar, GrammarConstraint
from .sampled import DEFAULT_MAX_NEW_TOKENS, Sample, to_sample
from .tokenizer import PolicyTokenizer

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Sample", "sample_workflows"]


def _generate(
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    segments: list[str],
    config: GenerationConfig,
    processors: LogitsProcessorList,
) -> list[list[int]]:
    """Generated ids per row (prompt removed) for one left-padded batch."""
    if not isinstance(model, GenerationMixin):
        raise TypeError(f"{type(model).__name__} cannot generate (not a causal LM)")
    batch = tokenizer.hf(segments, add_special_tokens=False, padding=True, return_tensors="pt")
    batch = batch.to(model.device)
    with torch.inference_mode():
        out = model.generate(  # type: ignore[misc,unused-ignore]  # self-type (older transformers)
            **batch, generation_config=config, logits_processor=processors
        )
    generated = out[:, batch["input_ids"].shape[1] :].tolist()
    rows: list[list[int]] = generated
    return rows


def sample_workflows(
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    prompts: Sequence[str],
    n: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    *,
    batch_size: int = 64,
    score_bin: int | None = None,
    negative: str = "",
    catalog: Catalog | None = None,
    grammar: Grammar[Any] | None = None,
) -> list[Sample]:
    """`n` samples per prompt, prompt-major (prompt 0's n samples first).

    `temperature` 0 is greedy. `seed` seeds the sampling (reproducible for the same batch
    composition) and fills ``$SEED``. `score_bin` conditions a ComfyGen-FT policy.
    `grammar` constrains decoding (module docstring); build it once and pass it to every call.
    """
    if n < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("n, batch_size and max_new_tokens must be >= 1")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    catalog = default_catalog() if catalog is None else catalog
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_k=0,  # None would mean "unset": generate then applies its default top-k of 50
        top_p=None,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_id,
        eos_token_id=tokenizer.eos_id,
        bos_token_id=tokenizer.bos_id,
    )
    constraint = [] if grammar is None else [GrammarConstraint(grammar, max_new_tokens)]
    processors = LogitsProcessorList([*(logits_processors or []), *constraint])
    rows = [prompt for prompt in prompts for _ in range(n)]
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            segments = [tokenizer.prompt_segment(prompt, score_bin) for prompt in chunk]
            for prompt, ids in zip(
                chunk, _generate(model, tokenizer, segments, config, processors), strict=True
            ):
                samples.append(to_sample(tokenizer, prompt, ids, negative, seed, catalog))
    return samples
