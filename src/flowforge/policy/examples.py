"""Training examples for the policy: (prompt segment, workflow) token sequences.

Two sources, one layout (``<bos> [<score_k>] prompt <sep> workflow <eos>``):

- **Vocabulary pairs (phase 1 of the method).** Each pair is a library workflow with a train
  prompt drawn at random. The pairing is deliberately uninformative: SFT teaches the
  *language* of workflows (which classes, inputs, values and links make a valid graph), not
  which workflow suits which prompt; that is GRPO's job against the reward ensemble.
  Workflows are visited in shuffled rounds (every workflow once per round) so each is seen
  ``pairs / len(library)`` times give or take one, instead of some never.
- **Ensemble-preferred pairs (an option of phase 1, `preferred_pairs`).** Each train prompt,
  in shuffled rounds, with a library workflow drawn from a softmax of the reward ensemble's
  predictions for that prompt. Still no rendering; the pairing now says which workflows the
  ensemble prefers for which prompt, so the policy learns to read its prompt before GRPO
  (with random pairs it learns that the prompt never matters, and 200 GRPO steps did not
  teach it otherwise: docs/policy.md).
- **Score-conditioned triplets (the ComfyGen-FT baseline).** Each judged triplet becomes
  ``(prompt, score) -> workflow``, the score written as a bin token ``<score_k>`` after
  ``<bos>``. The score is the mean of the named training scores (never the held-out one);
  bins are quantiles of the training scores (`ScoreBins`), so the top bin means "among the
  best 1/B of what was judged" on any judge's scale. Inference asks for the top bin, like
  ComfyGen's high target score (0.725 on its scale).

Sequences are tokenized here (not by TRL) so that an example longer than the model's
``max_length`` is an error instead of a silently truncated workflow.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .tokenizer import PolicyTokenizer


class ExampleError(ValueError):
    """Training data that cannot be built as asked."""


@dataclass(frozen=True)
class Example:
    """One training example before tokenization."""

    prompt: str
    workflow_text: str
    score_bin: int | None = None


def library_pairs(
    workflow_texts: Sequence[str], prompts: Sequence[str], pairs: int, seed: int
) -> list[Example]:
    """`pairs` (prompt, workflow) examples: workflows in shuffled rounds, prompts at random."""
    if not workflow_texts or not prompts:
        raise ExampleError("vocabulary pairs need at least one workflow and one prompt")
    if pairs < 1:
        raise ExampleError(f"pairs must be >= 1, got {pairs}")
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < pairs:
        round_ = list(range(len(workflow_texts)))
        rng.shuffle(round_)
        order.extend(round_)
    return [Example(rng.choice(prompts), workflow_texts[i]) for i in order[:pairs]]


def preferred_pairs(
    workflow_texts: Sequence[str],
    prompts: Sequence[str],
    rewards: NDArray[np.float64],
    pairs: int,
    temperature: float,
    seed: int,
    top_k: int = 0,
) -> list[Example]:
    """`pairs` examples: prompts in shuffled rounds, each with a workflow drawn from
    ``softmax(rewards[prompt] / temperature)`` (`rewards`: (prompts, workflows), the ensemble's
    predictions). Low temperatures pair a prompt with its few best workflows, high ones
    approach uniform pairing. `top_k` > 0 draws only among a prompt's `top_k` best-predicted
    workflows (ties with the k-th included): the temperature alone pairs a prompt with
    hundreds once thousands of candidates score alike."""
    table = np.asarray(rewards, dtype=np.float64)
    if table.shape != (len(prompts), len(workflow_texts)) or table.size == 0:
        raise ExampleError(
            f"rewards must be (prompts, workflows) = ({len(prompts)}, {len(workflow_texts)}), "
            f"got {table.shape}"
        )
    if not np.isfinite(table).all():
        raise ExampleError("rewards must be finite (score invalid workflows with the floor)")
    if pairs < 1:
        raise ExampleError(f"pairs must be >= 1, got {pairs}")
    if not temperature > 0:
        raise ExampleError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ExampleError(f"top_k must be >= 0 (0: every workflow), got {top_k}")
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(len(prompts)) for _ in range(-(-pairs // len(prompts)))]
    )[:pairs]
    cumulative = np.cumsum(pairing_weights(table, temperature, top_k), axis=1)  # (P, W)
    draws = rng.random(pairs)
    picks = [
        min(int(np.searchsorted(cumulative[p], u, side="right")), len(workflow_texts) - 1)
        for p, u in zip(order, draws, strict=True)
    ]
    return [Example(prompts[p], workflow_texts[w]) for p, w in zip(order, picks, strict=True)]


def capped_pairs(
    pairs: Sequence[Example],
    fallback: Sequence[Example],
    capped: set[str],
    share: float,
    seed: int,
) -> list[Example]:
    """`pairs` with at most ``floor(share * len(pairs))`` of them pairing a workflow in
    `capped`: the excess, chosen uniformly at random (`seed`), each replaced by the pair
    at its place in `fallback`, the same prompt drawn again among workflows not capped
    (`preferred_pairs` with the same `pairs` count and seed draws the same prompt order).

    Why: a policy wide enough to copy its targets writes the library workflows among them
    verbatim; capping their share of the re-paired SFT's pairs keeps the pairs the ensemble
    likes most while leaving room for new designs (docs/evaluation.md, "What was tried")."""
    if len(fallback) != len(pairs):
        raise ExampleError(f"fallback must match pairs: {len(fallback)} != {len(pairs)}")
    if not 0 <= share <= 1:
        raise ExampleError(f"share must be in [0, 1], got {share}")
    if any(a.prompt != b.prompt for a, b in zip(pairs, fallback, strict=True)):
        raise ExampleError("fallback must pair the same prompts in the same order")
    hits = [i for i, example in enumerate(pairs) if example.workflow_text in capped]
    excess = len(hits) - int(share * len(pairs) + 1e-9)  # floor, blind to 0.29 * 100's float
    if excess <= 0:
        return list(pairs)
    replaced = set(np.random.default_rng(seed).choice(hits, size=excess, replace=False).tolist())
    if any(fallback[i].workflow_text in capped for i in replaced):
        raise ExampleError("fallback must pair other workflows than the capped ones")
    return [fallback[i] if i in replaced else example for i, example in enumerate(pairs)]


def effective_choices(
    rewards: NDArray[np.float64], temperature: float, top_k: int = 0
) -> NDArray[np.float64]:
    """Per prompt, ``exp(entropy)`` of the pairing distribution: how many workflows a
    prompt is effectively paired with (1: always the same one; W: uniform)."""
    weights = pairing_weights(np.asarray(rewards, np.float64), temperature, top_k)
    entropy = -(weights * np.log(np.where(weights > 0, weights, 1.0))).sum(axis=1)
    result: NDArray[np.float64] = np.exp(entropy)
    return result


def pairing_weights(
    table: NDArray[np.float64], temperature: float, top_k: int = 0
) -> NDArray[np.float64]:
    """Row-wise ``softmax(table / temperature)`` (max subtracted: no overflow when cold),
    over each row's `top_k` largest entries (and ties with the k-th) when `top_k` > 0: the
    distribution ensemble pairing draws each prompt's workflows from."""
    if 0 < top_k < table.shape[1]:
        kth = np.partition(table, -top_k, axis=1)[:, -top_k, None]
        table = np.where(table >= kth, table, -np.inf)
    weights: NDArray[np.float64] = np.exp((table - table.max(axis=1, keepdims=True)) / temperature)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


@dataclass(frozen=True)
class ScoreBins:
    """Quantile bins of training scores: bin k holds scores in [edges[k-1], edges[k])."""

    edges: tuple[float, ...]  # len = bins - 1, increasing

    @staticmethod
    def fit(scores: Sequence[float], bins: int) -> ScoreBins:
        if len(scores) < bins:
            raise ExampleError(f"{len(scores)} scored triplets cannot fill {bins} score bins")
        quantiles = np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0, 1, bins + 1))
        return ScoreBins(tuple(float(q) for q in quantiles[1:-1]))

    @property
    def bins(self) -> int:
        return len(self.edges) + 1

    def bin_of(self, score: float) -> int:
        return int(np.searchsorted(np.asarray(self.edges), score, side="right"))


def training_score(scores: dict[str, float], names: Sequence[str]) -> float:
    """The mean of the named scores; ExampleError naming what is missing."""
    missing = [name for name in names if name not in scores]
    if missing:
        raise ExampleError(
            f"triplet has no score {missing[0]!r} (it has {', '.join(sorted(scores))}); "
            "choose --score-names among those"
        )
    return float(np.mean([scores[name] for name in names]))


def seed_means(
    rows: Sequence[tuple[str, str, dict[str, float]]],
) -> list[tuple[str, str, dict[str, float]]]:
    """One row per (prompt, workflow): each score averaged over the pair's render seeds.

    ComfyGen-FT's label says how good a workflow is for a prompt; the seed only adds noise
    to it, so the seeds of a pair are one example (first-seen order, every name the pair's
    rows share)."""
    grouped: dict[tuple[str, str], list[dict[str, float]]] = {}
    for prompt, text, scores in rows:
        grouped.setdefault((prompt, text), []).append(scores)
    means = []
    for (prompt, text), group in grouped.items():
        names = set(group[0]).intersection(*group[1:])
        means.append((prompt, text, {n: float(np.mean([g[n] for g in group])) for n in names}))
    return means


def scored_examples(
    rows: Sequence[tuple[str, str, dict[str, float]]], names: Sequence[str], bins: int
) -> tuple[list[Example], ScoreBins]:
    """ComfyGen-FT examples from (prompt, workflow text, scores) rows, and the bins used."""
    scores = [training_score(row_scores, names) for _, _, row_scores in rows]
    fitted = ScoreBins.fit(scores, bins)
    examples = [
        Example(prompt, text, fitted.bin_of(score))
        for (prompt, text, _), score in zip(rows, scores, strict=True)
    ]
    return examples, fitted


@dataclass(frozen=True)
class TokenizedExamples:
    """Columns for TRL's SFTTrainer (already tokenized): ids and the completion mask."""

    input_ids: list[list[int]]
    completion_mask: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)

    @property
    def longest(self) -> int:
        return max(len(ids) for ids in self.input_ids)


def tokenize_examples(
    tokenizer: PolicyTokenizer, examples: Sequence[Example], max_length: int
) -> TokenizedExamples:
    """Token ids (prompt segment, workflow, ``<eos>``) with the loss on workflow + eos only."""
    segments = [tokenizer.prompt_segment(e.prompt, e.score_bin) for e in examples]
    prompt_ids = tokenizer.hf(segments, add_special_tokens=False)["input_ids"]
    cache: dict[str, list[int]] = {}
    input_ids, masks = [], []
    for example, prompt in zip(examples, prompt_ids, strict=True):
        completion = cache.get(example.workflow_text)
        if completion is None:
            completion = [*tokenizer.encode_workflow(example.workflow_text), tokenizer.eos_id]
            cache[example.workflow_text] = completion
        ids = [*prompt, *completion]
        if len(ids) > max_length:
            raise ExampleError(
                f"an example has {len(ids)} tokens, more than max_length {max_length}; "
                "raise max_length (and the model's max_position_embeddings)"
            )
        input_ids.append(ids)
        masks.append([0] * len(prompt) + [1] * len(completion))
    return TokenizedExamples(input_ids, masks)
