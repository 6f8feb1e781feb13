"""The designers an evaluation compares, each a small class behind one Protocol.

A designer answers ``design(prompts, seeds)`` with one workflow text form per prompt
(placeholders ``$PROMPT`` / ``$NEGATIVE`` / ``$SEED`` unfilled), whatever it is: a fixed
workflow, a retrieval over judged train prompts, the judge's own pick from the library, or
a policy sampled with or without guidance and reranked by the reward ensemble. The
evaluation checks and judges every text the same way, so a designer cannot mark its own
homework: it returns text, nothing else. `judge_calls` counts the judgements a designer
itself consumed while designing (only the oracle consumes any).

`seeds` holds one seed per prompt; a designer that samples derives its sampling seed from
all of them, so the same prompts and seeds give the same designs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from transformers import LogitsProcessor, PreTrainedModel

from ..judge.base import JudgeItem, JudgeResult
from ..policy.constraint import GrammarConstraint
from ..policy.design import RewardScorer
from ..policy.directory import design_score_bin, policy_kind
from ..policy.grammar import TextFormGrammar
from ..policy.guidance import GuidanceProcessor
from ..policy.model import load_policy, numpy_copy
from ..policy.numpy_llama import NumpyLlama, Runtime, UnsupportedModel
from ..policy.numpy_sampler import decode
from ..policy.sample import Sample, sample_workflows
from ..policy.sampled import to_sample
from ..policy.tokenizer import PolicyTokenizer
from ..workflow.schema import Catalog
from .baselines import RetrievalTable


class Designer(Protocol):
    """Anything that designs one workflow text per prompt (see the module docstring)."""

    judge_calls: int

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        """One text form per prompt, in order."""
        ...


class TextEncoder(Protocol):
    """Sentence embeddings, unit-normalised (the MiniLM `PromptEncoder` is one)."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31) from any parts (a hash: independent across parts)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


class FixedDesigner:
    """The same workflow for every prompt (the default workflow; the best fixed one)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.judge_calls = 0

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        return [self.text for _ in prompts]


class RetrievalDesigner:
    """ComfyGen-IC's spirit without an LLM: for a prompt, pool the triplets of its `k` most
    similar train prompts (cosine of sentence embeddings) and take the workflow with the best
    mean training score there."""

    def __init__(self, table: RetrievalTable, encoder: TextEncoder, k: int) -> None:
        self.table = table
        self.encoder = encoder
        self.k = min(k, len(table.prompts))
        self.judge_calls = 0
        self._train = encoder.encode(table.prompts)  # (P, D)

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        similarity = self.encoder.encode(list(prompts)) @ self._train.T  # (Q, P)
        texts = []
        for row in similarity:
            nearest = np.argsort(-row, kind="stable")[: self.k]
            texts.append(self.table.best_over([self.table.prompts[i] for i in nearest]))
        return texts


ScoreItems = Callable[[Sequence[JudgeItem]], list[JudgeResult]]
FillFn = Callable[[str, str, int], JudgeItem]


class OracleDesigner:
    """The best library workflow per prompt as the judge itself ranks it (a reference, not
    a method: it renders every library workflow for every prompt). It chooses by the mean
    training score over `seeds` renders of its own, drawn apart from the evaluation's."""

    def __init__(
        self,
        library: Sequence[str],
        score_items: ScoreItems,
        fill: FillFn,
        training_score: Callable[[Mapping[str, float]], float],
        seeds: int,
    ) -> None:
        self.library = list(library)
        self.score_items = score_items
        self.fill = fill
        self.training_score = training_score
        self.seeds = seeds
        self.judge_calls = 0

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        return [self._best(prompt, seed) for prompt, seed in zip(prompts, seeds, strict=True)]

    def _best(self, prompt: str, seed: int) -> str:
        render_seeds = [derive_seed("oracle", seed, s) for s in range(self.seeds)]
        items = [self.fill(text, prompt, s) for text in self.library for s in render_seeds]
        results = self.score_items(items)
        self.judge_calls += len(items)
        means = []
        for w in range(len(self.library)):
            chunk = results[w * self.seeds : (w + 1) * self.seeds]
            scored = [self.training_score(r.scores) for r in chunk if r.scores is not None]
            means.append(sum(scored) / len(scored) if len(scored) == self.seeds else -np.inf)
        return self.library[int(np.argmax(means))]


@dataclass(frozen=True)
class SamplingSettings:
    """How policies are sampled in an evaluation (`EvalConfig`'s fields of the same names)."""

    temperature: float
    constrained: bool
    max_new_tokens: int
    batch_size: int
    negative: str


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy directory loaded once, and the score bin it is asked for (ComfyGen-FT: the
    top bin, like ComfyGen's high target score; other policies: none)."""

    model: PreTrainedModel
    tokenizer: PolicyTokenizer
    score_bin: int | None
    kind: str


def load_for_design(directory: Path) -> LoadedPolicy:
    """Load a policy directory (SFT, ComfyGen-FT or GRPO run)."""
    model, tokenizer = load_policy(directory)
    score_bin = design_score_bin(directory, tokenizer)
    return LoadedPolicy(model, tokenizer, score_bin, policy_kind(directory))


class PolicyDesigner:
    """Samples a policy, optionally guided from a reference model with weight `weight`
    (``ref + w * (policy - ref)`` on log-probabilities) and through the schema constraint.

    `grammar` shares the schema grammar of another designer of the same policy and catalog
    (the guided designers use GRPO's): building one costs ~0.1 s and its memos warm up
    over the first samples.

    `runtime` "auto" samples with the numpy Llama (``policy.numpy_sampler.decode``) when it
    can run the policy (and the reference), as ``flowforge design`` does: the same decoding
    without transformers' per-token call overhead (docs/evaluation.md, "Runtimes"); else
    with ``generate`` and the guidance and constraint processors."""

    def __init__(
        self,
        policy: LoadedPolicy,
        catalog: Catalog,
        settings: SamplingSettings,
        *,
        reference: PreTrainedModel | None = None,
        weight: float | None = None,
        grammar: TextFormGrammar | None = None,
        runtime: Runtime = "auto",
    ) -> None:
        if (reference is None) != (weight is None):
            raise ValueError("guidance needs both a reference model and a weight")
        if grammar is not None and grammar.tokenizer is not policy.tokenizer:
            raise ValueError("a shared grammar must be of this policy's tokenizer")
        self.policy = policy
        self.catalog = catalog
        self.settings = settings
        self.reference = reference
        self.weight = weight
        self.judge_calls = 0
        self.runtime = runtime
        self._grammar = grammar
        self._processors: list[LogitsProcessor] | None = None

    @cached_property
    def numpy_model(self) -> NumpyLlama | None:
        """The policy (with the reference as a second member when guided) in the numpy
        runtime; None when `runtime` is "transformers" or numpy cannot run them ("numpy":
        UnsupportedModel)."""
        if self.runtime == "transformers":
            return None
        try:
            model = numpy_copy(self.policy.model)
            if self.reference is not None:
                model = NumpyLlama.stack([model, numpy_copy(self.reference)])
        except (UnsupportedModel, ValueError) as err:  # ValueError: shapes differ
            if self.runtime == "numpy":
                raise UnsupportedModel(str(err)) from err
            return None
        return model

    @cached_property
    def grammar(self) -> TextFormGrammar:
        """The schema grammar of this policy's tokenizer and the catalog (built once)."""
        if self._grammar is not None:
            return self._grammar
        return TextFormGrammar(self.policy.tokenizer, self.catalog)

    def processors(self) -> list[LogitsProcessor]:
        """The decoding processors, guidance first and the constraint last; built once (both
        recognise a new ``generate`` call and start over, so they are reused)."""
        if self._processors is None:
            tokenizer, s = self.policy.tokenizer, self.settings
            found: list[LogitsProcessor] = []
            if self.reference is not None and self.weight is not None:
                found.append(GuidanceProcessor(self.reference, self.weight, tokenizer.pad_id))
            if s.constrained:
                found.append(GrammarConstraint(self.grammar, s.max_new_tokens))
            self._processors = found
        return self._processors

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], n: int) -> list[Sample]:
        """`n` samples per prompt, prompt-major. Each prompt draws from a generator of its
        own seed, as ``flowforge design PROMPT --seed SEED`` does: its samples do not depend
        on the other prompts (`_sample_numpy`; on transformers `sample_workflows`'s
        `prompt_seeds`)."""
        if len(seeds) != len(prompts):
            raise ValueError(f"one seed per prompt: {len(seeds)} seeds for {len(prompts)}")
        s = self.settings
        if self.numpy_model is not None:
            return self._sample_numpy(self.numpy_model, prompts, seeds, n)
        return sample_workflows(
            self.policy.model,
            self.policy.tokenizer,
            list(prompts),
            n=n,
            temperature=s.temperature,
            prompt_seeds=list(seeds),
            logits_processors=self.processors(),
            max_new_tokens=s.max_new_tokens,
            batch_size=s.batch_size,
            score_bin=self.policy.score_bin,
            negative=s.negative,
            catalog=self.catalog,
        )

    def _sample_numpy(
        self, model: NumpyLlama, prompts: Sequence[str], seeds: Sequence[int], n: int
    ) -> list[Sample]:
        """As `sample`, with the numpy runtime: batches of about `batch_size` rows, each
        prompt run once and fanned out to its `n` rows, which draw from a generator seeded
        by the prompt's own seed (`numpy_sampler.sample_candidates`'s, so a design request
        with that seed gets the same candidates). Why: with one generator per batch, one
        changed prompt of an evaluation's sample redrew the designs of all 63 others in
        its batch (session 29: a row moved by 0.035 through 40 changed prompts)."""
        s, tokenizer = self.settings, self.policy.tokenizer
        per_batch = max(1, s.batch_size // n)
        samples: list[Sample] = []
        for start in range(0, len(prompts), per_batch):
            batch = prompts[start : start + per_batch]
            batch_seeds = seeds[start : start + per_batch]
            decoded = decode(
                model,
                [tokenizer.encode_segment(tokenizer.prompt_segment(p, self.policy.score_bin))
                 for p in batch],
                n,
                temperature=s.temperature,
                rng=[np.random.default_rng(seed) for seed in batch_seeds],
                max_new_tokens=s.max_new_tokens,
                eos_id=tokenizer.eos_id,
                grammar=self.grammar if s.constrained else None,
                guidance=self.weight,
            )  # fmt: skip
            rows = [pair for pair in zip(batch, batch_seeds, strict=True) for _ in range(n)]
            samples += [
                to_sample(tokenizer, prompt, ids, s.negative, seed, self.catalog)
                for (prompt, seed), ids in zip(rows, decoded.tokens, strict=True)
            ]
        return samples

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        return [sample.text for sample in self.sample(prompts, seeds, 1)]


class Sampler(Protocol):
    """A designer that can also draw `n` samples per prompt (what best-of-N ranks)."""

    judge_calls: int

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], n: int) -> list[Sample]: ...


def mean_filling_worst(scores: Sequence[float | None]) -> float:
    """The mean of `scores`, a None (a design that could not be judged) counting as the worst
    score seen (0.0 when none was): the judge's choices must not prefer a designer for
    failing on hard prompts."""
    worst = min((v for v in scores if v is not None), default=0.0)
    return float(np.mean([worst if v is None else v for v in scores]))


@dataclass(frozen=True)
class WeightChoice:
    """The guidance weight a `SelectedWeightDesigner` chose, and on what evidence."""

    weight: float
    #: Mean training score of each weight's designs on the selection prompts.
    scores: dict[float, float]
    prompts: int
    judge_calls: int


class SelectedWeightDesigner:
    """GRPO + guidance with w chosen before the evaluation, by the judge, on validation prompts.

    The ensemble cannot choose w: extrapolating past GRPO can land where every member is
    wrong together (docs/evaluation.md: on world 1, w = 2 was predicted 2.37 and judged 0.34
    in training score). So each candidate w designs for `prompts` (validation prompts, which
    no stage trained on: on the train prompts GRPO optimised, one policy scored 1.14 where
    it scored 0.00 on held-out PartiPrompts; the evaluation's held-out prompts are never
    looked at) and the judge scores them once per render seed; the w with the best mean
    *training* score wins (the held-out scorer stays unseen), a design that cannot be judged
    counting as the worst score seen. Those
    judgements are data it chose from, like the best fixed workflow's (`WeightChoice`
    counts them; the method reports them as data calls), not judge calls while designing.
    """

    def __init__(self, candidates: Mapping[float, PolicyDesigner], choice: WeightChoice) -> None:
        """The designer of `choice` among `candidates`; `judged` makes the choice (another
        process of the same evaluation hands over the one made there: `evaluate.designing`)."""
        if choice.weight not in candidates:
            raise ValueError(f"w={choice.weight:g} chosen, but not among the candidates")
        self.judge_calls = 0
        self.choice = choice
        self.chosen = candidates[choice.weight]

    @classmethod
    def judged(
        cls,
        candidates: Mapping[float, PolicyDesigner],
        prompts: Sequence[str],
        render_seeds: int,
        score_items: ScoreItems,
        fill: FillFn,
        training_score: Callable[[Mapping[str, float]], float],
    ) -> SelectedWeightDesigner:
        """Choose w by the judge on `prompts` (class docstring)."""
        if not candidates or not prompts or render_seeds < 1:
            raise ValueError("need candidate weights, selection prompts and render seeds")
        calls = 0
        means = {}
        design_seeds = [derive_seed("select", "design", p) for p in prompts]
        for weight, designer in candidates.items():
            texts = designer.design(prompts, design_seeds)
            items = [
                fill(text, prompt, derive_seed("select", "render", prompt, s))
                for text, prompt in zip(texts, prompts, strict=True)
                for s in range(render_seeds)
            ]
            results = score_items(items)
            calls += len(items)
            scored = [training_score(r.scores) if r.scores is not None else None for r in results]
            means[weight] = mean_filling_worst(scored)
        chosen = max(means, key=lambda w: (means[w], -abs(w - 1.0)))  # ties: nearer GRPO
        return cls(candidates, WeightChoice(chosen, means, len(prompts), calls))

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], n: int) -> list[Sample]:
        return self.chosen.sample(prompts, seeds, n)

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        return self.chosen.design(prompts, seeds)


class EnsemblePickDesigner:
    """The library workflow the reward ensemble predicts best for each prompt (a diagnostic
    reference, off by default): no judge call, no policy. Against GRPO it separates what the
    ensemble knows per prompt from what GRPO extracted from it (docs/evaluation.md)."""

    def __init__(self, library: Sequence[str], scorer: RewardScorer) -> None:
        self.library = list(library)
        self.scorer = scorer
        self.judge_calls = 0

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        picks = []
        for prompt in prompts:
            predicted = self.scorer.predict([prompt] * len(self.library), self.library)
            picks.append(self.library[int(np.argmax(predicted))])
        return picks


class EnsembleFixedDesigner:
    """The one library workflow with the best mean predicted reward over train prompts,
    used for every prompt (a diagnostic reference, with `EnsemblePickDesigner`). Beside the
    best fixed workflow, which judged data chose, it shows how far the ensemble's own
    choice can be trusted: what GRPO climbs towards when it finds no per-prompt signal."""

    def __init__(
        self, library: Sequence[str], scorer: RewardScorer, train_prompts: Sequence[str]
    ) -> None:
        if not library or not train_prompts:
            raise ValueError("the ensemble's fixed choice needs a library and train prompts")
        self.library = list(library)
        self.scorer = scorer
        self.train_prompts = list(train_prompts)
        self.judge_calls = 0

    @cached_property
    def choice(self) -> str:
        """The library workflow with the best mean prediction (made when first asked: a
        helper process that builds every method but designs others never pays for it)."""
        total = np.zeros(len(self.library))
        for prompt in self.train_prompts:
            total += np.asarray(self.scorer.predict([prompt] * len(self.library), self.library))
        return self.library[int(np.argmax(total))]  # ties: the first in library order

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        return [self.choice] * len(prompts)


class BestOfNDesigner:
    """`n` samples of a policy per prompt, the one with the best predicted reward kept
    (test-time scaling with no rendering); no valid sample: the first one (it will fail)."""

    def __init__(self, sampler: Sampler, scorer: RewardScorer, n: int) -> None:
        self.sampler = sampler
        self.scorer = scorer
        self.n = n
        self.judge_calls = 0

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        samples = self.sampler.sample(prompts, seeds, self.n)
        texts = []
        for i, prompt in enumerate(prompts):
            group = samples[i * self.n : (i + 1) * self.n]
            valid = [s for s in group if s.valid]
            if not valid:
                texts.append(group[0].text)
                continue
            rewards = self.scorer.predict([prompt] * len(valid), [s.text for s in valid])
            texts.append(valid[int(np.argmax(rewards))].text)
        return texts
