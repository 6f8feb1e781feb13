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

Random draws: by default one torch seed per call (`seed`), so a prompt's samples depend on
the prompts batched beside it. With `prompt_seeds` each prompt draws from a generator of its
own seed instead (`RowSampling`: ``generate`` then decodes greedily from logits that leave
only the drawn token), and batches hold whole prompts, so a prompt's samples are a function
of the prompt, its seed, `n` and the batch size alone: the evaluation's designs and
``flowforge design PROMPT --seed SEED`` agree, as on the numpy runtime (whose draws differ).

Every sample is parsed with ``from_text`` (placeholders filled from
``Bindings.request(prompt, negative, seed)``) and validated against the catalog
(``sampled.py``, shared with the numpy sampler).
"""

from __future__ import annotations

import copy
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


class RowSampling(LogitsProcessor):
    """Draws each row's next token from the row's own generator and returns logits that
    leave only that token, for ``generate`` to pick greedily.

    Why a processor: ``generate`` samples all rows from torch's one global generator, so a
    row's draws depend on its batch-mates. Here every row takes exactly one uniform number
    per step from its generator (rows of one prompt share the prompt's, in row order), turned
    into a token by the inverse CDF of ``softmax(logits / temperature)``; a row's tokens then
    depend on its prompt's generator and the rows of that prompt only. It must run last, on
    the logits every other processor has shaped. A row with no finite logit (never the case
    for a row still decoding) gets its largest one."""

    def __init__(self, generators: Sequence[torch.Generator], temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"row sampling needs a temperature > 0, got {temperature}")
        self.generators = list(generators)
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows for {len(self.generators)} generators")
        probs = torch.softmax(scores.double() / self.temperature, dim=-1)
        uniform = torch.cat(
            [torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]
        )
        cdf = probs.cumsum(dim=-1)
        total = cdf[:, -1]
        # right=True: the first token whose cumulative mass exceeds u * total, so a token of
        # probability 0 is never drawn (u = 0 included)
        drawn = torch.searchsorted(cdf, (uniform * total)[:, None], right=True).squeeze(1)
        drawn = drawn.clamp(max=scores.shape[1] - 1)
        broken = ~torch.isfinite(total) | (total <= 0)
        drawn[broken] = scores[broken].argmax(dim=-1)
        only = torch.full_like(scores, float("-inf"))
        only.scatter_(1, drawn[:, None], 0.0)
        return only  # type: ignore[return-value]


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
    prompt_seeds: Sequence[int] | None = None,
) -> list[Sample]:
    """`n` samples per prompt, prompt-major (prompt 0's n samples first).

    `temperature` 0 is greedy. `seed` seeds the sampling (reproducible for the same batch
    composition) and fills ``$SEED``. `prompt_seeds` (one per prompt) instead gives each
    prompt a generator of its own seed, which also fills its ``$SEED`` (module docstring).
    `score_bin` conditions a ComfyGen-FT policy. `grammar` constrains decoding (module
    docstring); build it once and pass it to every call.
    """
    if n < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("n, batch_size and max_new_tokens must be >= 1")
    if prompt_seeds is not None and len(prompt_seeds) != len(prompts):
        raise ValueError(f"one seed per prompt: {len(prompt_seeds)} seeds for {len(prompts)}")
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
    if prompt_seeds is not None:
        return _sample_per_prompt(
            model, tokenizer, prompts, prompt_seeds, n, temperature, config, processors,
            batch_size, score_bin, negative, catalog,
        )  # fmt: skip
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


def _sample_per_prompt(
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    prompts: Sequence[str],
    seeds: Sequence[int],
    n: int,
    temperature: float,
    config: GenerationConfig,
    processors: LogitsProcessorList,
    batch_size: int,
    score_bin: int | None,
    negative: str,
    catalog: Catalog,
) -> list[Sample]:
    """`sample_workflows` with one generator per prompt: batches of whole prompts (about
    `batch_size` rows), `RowSampling` last, ``generate`` greedy."""
    greedy = copy.deepcopy(config)
    greedy.do_sample, greedy.temperature, greedy.top_k = False, None, None  # drawn by RowSampling
    per_batch = max(1, batch_size // n)
    pairs = list(zip(prompts, seeds, strict=True))
    samples: list[Sample] = []
    for start in range(0, len(pairs), per_batch):
        batch = pairs[start : start + per_batch]
        rows = [pair for pair in batch for _ in range(n)]
        steps = processors
        if temperature > 0:
            generators = [torch.Generator().manual_seed(int(seed)) for _, seed in batch]
            row_generators = [g for g in generators for _ in range(n)]
            steps = LogitsProcessorList([*processors, RowSampling(row_generators, temperature)])
        segments = [tokenizer.prompt_segment(prompt, score_bin) for prompt, _ in rows]
        decoded = _generate(model, tokenizer, segments, greedy, steps)
        for (prompt, seed), ids in zip(rows, decoded, strict=True):
            samples.append(to_sample(tokenizer, prompt, ids, negative, int(seed), catalog))
    return samples
