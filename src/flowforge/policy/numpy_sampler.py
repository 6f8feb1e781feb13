"""Sampling policies with the numpy Llama (no torch, no transformers).

The same decoding as ``sample.py`` + ``guidance.py`` + ``constraint.py``, for `n` completions
of each of some prompts (`decode`): a design request's candidates (`sample_candidates`), the
evaluation's batches (``evaluate.designers.PolicyDesigner``) and GRPO's groups
(``rollout.py``, which also keeps each token's log-probability and the grammar's allowed
tokens). Per step, on the raw next-token logits:

1. guidance, if a reference is given: ``ref + w * (policy - ref)`` over each model's
   log-softmax, exact at w = 0 and w = 1 (the lerp of ``torch.lerp``), a token either model
   rules out staying impossible;
2. the schema constraint, if a grammar is given: only the tokens the row's grammar state
   allows can be drawn (the grammar's budget is `max_new_tokens`, so every row finishes);
3. temperature, then ancestral sampling (Gumbel-max with a numpy generator; temperature 0 is
   greedy). No top-k or top-p, as in ``sample.py``.

Under a grammar only the allowed tokens' logits are computed (`_draw_allowed`): the grammar
leaves one token at most positions, and the softmax over the allowed tokens is the same
distribution (with guidance, log-softmax's normaliser is a constant per row that cancels).

Each prompt is run once and its cache fanned out to its `n` rows; prompts of different
lengths are left-padded; finished rows leave the batch. With guidance, `model` holds the
policy and the reference as its two members (``NumpyLlama.stack``): one forward pass gives
both. The draws are reproducible for a seed, but not the same draws as the transformers
sampler's for that seed (another generator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    mixed = _lerp(reference, policy, weight)
    possible = np.isfinite(policy) & np.isfinite(reference)
    return np.where(possible, mixed, np.float32(-np.inf)).astype(np.float32)


def _lerp(reference: Array, policy: Array, weight: float) -> Array:
    """``reference + w * (policy - reference)`` in torch.lerp's two forms: each returns its
    end point exactly (w = 0: the reference, w = 1: the policy)."""
    with np.errstate(invalid="ignore"):
        if weight < 0.5:
            mixed: Array = reference + np.float32(weight) * (policy - reference)
        else:
            mixed = policy - (policy - reference) * np.float32(1.0 - weight)
    return mixed


class RowNoise:
    """The uniform noise of the Gumbel-max draws, for the rows still writing: from one
    generator for the whole batch, or from one generator per prompt, which its `n` rows
    share. Why per prompt: a prompt's draws then do not depend on the prompts it was batched
    with (`decode`). Each row's values are taken in row order, so one prompt with its own
    generator draws exactly what one generator for the batch draws."""

    def __init__(
        self, rng: np.random.Generator | Sequence[np.random.Generator], prompts: int, n: int
    ) -> None:
        self.shared = rng if isinstance(rng, np.random.Generator) else None
        self.generators: list[np.random.Generator] = []
        if not isinstance(rng, np.random.Generator):
            self.generators = list(rng)
            if len(self.generators) != prompts:
                raise ValueError(
                    f"one generator per prompt: {len(self.generators)} for {prompts} prompts"
                )
        self.n = n

    def uniform(self, rows: NDArray[np.intp], counts: Sequence[int]) -> NDArray[np.float64]:
        """``sum(counts)`` values in [0, 1): `counts[i]` for row `rows[i]` (a row index of
        `decode`'s prompt-major rows), the rows in the order given."""
        if self.shared is not None:
            return self.shared.random(int(np.sum(counts)))
        parts = [
            self.generators[row // self.n].random(c) for row, c in zip(rows, counts, strict=True)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def _draw(
    scores: Array, temperature: float, noise: RowNoise, rows: NDArray[np.intp]
) -> tuple[NDArray[np.int64], Array]:
    """One token per row, and its log-probability under the distribution it was drawn from
    (``softmax(scores / T)``; at temperature 0, greedy, ``softmax(scores)``)."""
    if temperature == 0:
        logprobs = log_softmax(scores)
        picked: NDArray[np.int64] = scores.argmax(axis=-1)
    else:
        logprobs = log_softmax(scores / np.float32(temperature))
        vocab = logprobs.shape[-1]
        uniform = noise.uniform(rows, [vocab] * len(rows)).reshape(logprobs.shape)
        picked = (logprobs - np.log(-np.log(np.clip(uniform, 1e-20, None)))).argmax(axis=-1)
    return picked, np.take_along_axis(logprobs, picked[:, None], axis=-1)[:, 0]


def _draw_allowed(
    model: NumpyLlama,
    hidden: Array,
    permitted: list[NDArray[np.int64]],
    temperature: float,
    noise: RowNoise,
    rows: NDArray[np.intp],
    guidance: float | None,
) -> tuple[NDArray[np.int64], Array]:
    """As `_draw` on the scores restricted to each row's `permitted` tokens, computing the
    logits of those tokens only (`NumpyLlama.logits_at`): the same distribution, since
    softmax over the permitted tokens does not see the rest. With guidance the mix is of raw
    logits: log-softmax's normaliser is a constant per row and cancels the same way."""
    counts = np.fromiter(map(len, permitted), dtype=np.intp, count=len(permitted))
    if not counts.all():
        raise ValueError("the grammar allowed no token for a row")
    tokens = np.concatenate(permitted)
    row_of = np.repeat(np.arange(len(permitted)), counts)
    starts = np.cumsum(counts) - counts
    logits = model.logits_at(hidden, row_of, tokens)  # (M, k)
    scores = logits[0] if guidance is None else _lerp(logits[1], logits[0], guidance)
    x = scores if temperature == 0 else scores / np.float32(temperature)
    shifted = x - np.maximum.reduceat(x, starts)[row_of]
    logprobs = shifted - np.log(np.add.reduceat(np.exp(shifted), starts))[row_of]
    if temperature == 0:
        key = x
    else:
        uniform = noise.uniform(rows, counts.tolist())
        key = logprobs - np.log(-np.log(np.clip(uniform, 1e-20, None)))
    hits = np.flatnonzero(key == np.maximum.reduceat(key, starts)[row_of])
    first = hits[np.unique(row_of[hits], return_index=True)[1]]  # each row's first best
    return tokens[first], logprobs[first]


@dataclass(frozen=True)
class Decoded:
    """What `decode` wrote, row by row (in the order the rows were given)."""

    #: Token ids, up to and including ``<eos>`` when the row finished.
    tokens: list[list[int]]
    #: The log-probability of each token under the distribution it was drawn from.
    logps: list[list[float]]
    #: With a grammar and ``keep_allowed``: the token ids the grammar allowed at each position.
    allowed: list[list[NDArray[np.int64]]] | None


def decode(
    model: NumpyLlama,
    prompts: Sequence[Sequence[int]],
    n: int,
    *,
    temperature: float,
    rng: np.random.Generator | Sequence[np.random.Generator],
    max_new_tokens: int,
    eos_id: int,
    grammar: Grammar[Any] | None = None,
    guidance: float | None = None,
    keep_allowed: bool = False,
) -> Decoded:
    """`n` completions of each prompt (token ids), prompt-major, drawn from `rng`: one
    generator for the batch (GRPO's groups), or one per prompt (`RowNoise`), with which a
    prompt's completions do not depend on the other prompts of the batch (the rows are
    computed independently; see below).

    The prompts are run once (left-padded when their lengths differ) and each cache row
    fanned out to `n` rows; a row stops when it writes `eos_id`, and leaves the cache once
    half of the cache's rows have stopped (each row is computed on its own, so riding
    along changes no other row). `keep_allowed`
    records the grammar's allowed tokens per position (GRPO's update scores the same
    restricted distribution).
    """
    longest = max(len(ids) for ids in prompts)
    pad = np.asarray([longest - len(ids) for ids in prompts], dtype=np.intp)
    ids = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, pad[row] :] = prompt
    noise = RowNoise(rng, len(prompts), n)
    cache = model.new_cache(len(prompts), longest + max_new_tokens, pad if pad.any() else None)
    fan_out = np.repeat(np.arange(len(prompts)), n)
    hidden = model.hidden(ids, cache)[:, fan_out]  # (members, prompts * n, H)
    cache = cache.select(fan_out)
    n = len(fan_out)
    states: list[Any] = [grammar.initial_state(max_new_tokens)] * n if grammar else []
    tokens: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    allowed: list[list[NDArray[np.int64]]] = [[] for _ in range(n)]
    active = np.arange(n)  # the rows still writing, in batch order
    in_cache = np.arange(n)  # the cache row of each of them
    for _ in range(max_new_tokens):
        live = hidden if len(in_cache) == hidden.shape[1] else hidden[:, in_cache]
        if grammar is None:
            logits = model.head(live)
            scores = logits[0] if guidance is None else guide(logits[0], logits[1], guidance)
            picked, picked_logps = _draw(scores, temperature, noise, active)
        else:
            permitted = [grammar.allowed(state) for state in states]
            picked, picked_logps = _draw_allowed(
                model, live, permitted, temperature, noise, active, guidance
            )
            if keep_allowed:
                for row, ids_allowed in zip(active.tolist(), permitted, strict=True):
                    allowed[row].append(ids_allowed)
        drawn = picked.tolist()
        for row, token, logp in zip(active.tolist(), drawn, picked_logps.tolist(), strict=True):
            tokens[row].append(token)
            logps[row].append(logp)
        if grammar is not None:
            states = [grammar.advance(s, t) for s, t in zip(states, drawn, strict=True)]
        going = [i for i, token in enumerate(drawn) if token != eos_id]
        if not going:
            break
        keep = np.asarray(going, dtype=np.intp)
        if len(going) < len(drawn):
            active, in_cache = active[keep], in_cache[keep]
            states = [states[i] for i in going] if grammar is not None else states
            rows = hidden.shape[1]
            if rows - len(in_cache) >= rows // 2:  # copying the cache costs: finished rows
                cache = cache.select(in_cache)  # ride along until half of it is done
                in_cache = np.arange(len(in_cache))
        feed = np.full((cache.rows, 1), eos_id, dtype=np.int64)  # finished rows: anything
        feed[in_cache, 0] = picked[keep]
        hidden = model.hidden(feed, cache)
    return Decoded(tokens, logps, allowed if grammar is not None and keep_allowed else None)


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
    decoded = decode(
        model,
        [tokenizer.encode_segment(tokenizer.prompt_segment(prompt, score_bin))],
        n,
        temperature=temperature,
        rng=np.random.default_rng(seed),
        max_new_tokens=max_new_tokens,
        eos_id=tokenizer.eos_id,
        grammar=grammar,
        guidance=guidance,
    )
    return [to_sample(tokenizer, prompt, r, negative, seed, catalog) for r in decoded.tokens]
