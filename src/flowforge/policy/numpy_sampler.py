"""Sampling candidates of one design request with the numpy Llama (no torch, no transformers).

The same decoding as ``sample.py`` + ``guidance.py`` + ``constraint.py``, for the case a
design request needs: `n` candidates of one prompt. Per step, on the raw next-token logits:

1. guidance, if a reference is given: ``ref + w * (policy - ref)`` over each model's
   log-softmax, exact at w = 0 and w = 1 (the lerp of ``torch.lerp``), a token either model
   rules out staying impossible;
2. the schema constraint, if a grammar is given: every token the row's grammar state does
   not allow set to -inf (the grammar's budget is `max_new_tokens`, so every row finishes);
3. temperature, then ancestral sampling (Gumbel-max with a numpy generator seeded by `seed`;
   temperature 0 is greedy). No top-k or top-p, as in ``sample.py``.

All rows share the prompt, so the prompt is run once and its cache fanned out to `n` rows,
and rows leave the batch when they write ``<eos>``. With guidance, `model` holds the policy
and the reference as its two members (``NumpyLlama.stack``): one forward pass gives both.
The draws are reproducible for a seed, but not the same draws as the transformers sampler's
for that seed (another generator).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from flowforge.workflow.schema import Catalog

from .grammar import Grammar
from .numpy_llama import Array, NumpyLlama
from .sampled import Sample, to_sample
from .tokenizer import PolicyTokenizer


def log_softmax(logits: Array) -> Array:
    """Row-wise log-softmax; rows may hold -inf (never only -inf)."""
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    with np.errstate(divide="ignore"):
        result: Array = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def guide(policy_logits: Array, reference_logits: Array, weight: float) -> Array:
    """``ref + w * (policy - ref)`` over log-softmax of each (rows, vocab); exact at w=0, 1."""
    policy = log_softmax(policy_logits)
    reference = log_softmax(reference_logits)
    with np.errstate(invalid="ignore"):
        if weight < 0.5:  # torch.lerp's two forms: each returns its end point exactly
            mixed = reference + np.float32(weight) * (policy - reference)
        else:
            mixed = policy - (policy - reference) * np.float32(1.0 - weight)
    possible = np.isfinite(policy) & np.isfinite(reference)
    return np.where(possible, mixed, np.float32(-np.inf)).astype(np.float32)


def _masked(scores: Array, grammar: Grammar[Any], states: list[Any]) -> Array:
    out = np.full_like(scores, -np.inf)
    for row, state in enumerate(states):
        allowed = grammar.allowed(state)
        out[row, allowed] = scores[row, allowed]
    return out


def _draw(scores: Array, temperature: float, rng: np.random.Generator) -> NDArray[np.int64]:
    if temperature == 0:
        greedy: NDArray[np.int64] = scores.argmax(axis=-1)
        return greedy
    logprobs = log_softmax(scores / np.float32(temperature))
    noise = np.clip(rng.random(logprobs.shape), 1e-20, None)
    picked: NDArray[np.int64] = (logprobs - np.log(-np.log(noise))).argmax(axis=-1)
    return picked


def sample_candidates(
    model: NumpyLlama,
    tokenizer: PolicyTokenizer,
    prompt: str,
    n: int,
    *,
    temperature: float,
    seed: int,
    max_new_tokens: int,
    catalog: Catalog,
    grammar: Grammar[Any] | None = None,
    guidance: float | None = None,
    score_bin: int | None = None,
    negative: str = "",
) -> list[Sample]:
    """`n` candidates for `prompt` (module docstring), in row order. `guidance` w needs
    `model` to hold two members, policy then reference."""
    if n < 1 or max_new_tokens < 1:
        raise ValueError("n and max_new_tokens must be >= 1")
    if model.members != (1 if guidance is None else 2):
        raise ValueError("guidance needs a model of two members (policy, reference); else one")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ids = np.asarray([tokenizer.encode_segment(tokenizer.prompt_segment(prompt, score_bin))])
    capacity = ids.shape[1] + max_new_tokens
    cache = model.new_cache(1, capacity)
    logits = np.repeat(model.forward(ids, cache), n, axis=1)  # (members, n, V)
    cache = cache.select(np.zeros(n, dtype=np.intp))
    rng = np.random.default_rng(seed)
    states: list[Any] = [grammar.initial_state(max_new_tokens)] * n if grammar else []
    rows: list[list[int]] = [[] for _ in range(n)]
    active = np.arange(n)  # the rows still writing, in batch order
    for _ in range(max_new_tokens):
        scores = logits[0] if guidance is None else guide(logits[0], logits[1], guidance)
        if grammar is not None:
            scores = _masked(scores, grammar, states)
        tokens = _draw(scores, temperature, rng).tolist()
        for row, token in zip(active.tolist(), tokens, strict=True):
            rows[row].append(token)
        if grammar is not None:
            states = [grammar.advance(s, t) for s, t in zip(states, tokens, strict=True)]
        going = [i for i, token in enumerate(tokens) if token != tokenizer.eos_id]
        if not going:
            break
        keep = np.asarray(going, dtype=np.intp)
        if len(going) < len(tokens):
            active = active[keep]
            states = [states[i] for i in going] if grammar is not None else states
            cache = cache.select(keep)
        feed = np.asarray(tokens, dtype=np.int64)[keep][:, None]
        logits = model.forward(feed, cache)
    return [to_sample(tokenizer, prompt, r, negative, seed, catalog) for r in rows]
