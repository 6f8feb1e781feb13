"""From judged outcomes to the numbers of a report (definitions in docs/evaluation.md).

A method's result on a prompt is an `Outcome`: its design, the judge's scores for each
render seed, or why there are none (an invalid design, or a judge error on any render).
A prompt without scores is a failure: it is never dropped. For means it takes the worst
score any design got in this evaluation on that scorer (so failing cannot beat designing
badly), for win rates it loses to any scored design and ties with another failure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .judging import CheckedDesign, error_kind
from .metrics import distinct, share_not_in, text_bag, win_rate

ScoreFn = Callable[[Mapping[str, float]], float]


@dataclass(frozen=True)
class Outcome:
    """One method on one prompt."""

    prompt: str
    design: CheckedDesign
    scores: tuple[Mapping[str, float], ...]  # per render seed; () when failed
    error: str | None  # the invalid design's error or the first judge error
    quality: float | None = None  # sim only: noise-free quality (the same for every render)
    predicted: float | None = None  # ensemble mean prediction (valid designs)
    #: The prompt's design seed (one per prompt, every method): a sampling method's design
    #: is what ``flowforge design PROMPT --seed SEED`` writes with the method's settings.
    design_seed: int | None = None


@dataclass(frozen=True)
class MethodRun:
    """Everything one method produced, and what it cost."""

    name: str
    label: str
    outcomes: tuple[Outcome, ...]
    judge_calls: int  # renders of its designs in this evaluation, plus its own while designing
    data_calls: int  # judgements of the training data it learned or chose from
    seconds: float  # wall time of designing


@dataclass(frozen=True)
class MethodSummary:
    """The reported numbers of one method (docs/evaluation.md defines each)."""

    name: str
    label: str
    heldout: float
    train: float
    quality: float | None
    valid: float
    failed: int
    errors: dict[str, int]
    distinct: int
    not_in_library: float | None
    nn_similarity: float | None
    predicted: float | None
    gap: float | None
    judge_calls: int
    data_calls: int
    seconds: float


class LibraryIndex:
    """Design keys and piece bags of the library, for novelty and nearest-neighbour
    similarity: `metrics.nearest_similarity` for one design, computed as one matrix product
    over the library's unit-normalised bags (a 2,000-workflow library has ~2K pieces), and
    1 without a search for a design in the library."""

    def __init__(self, canonical_texts: Sequence[str], keys: Sequence[str]) -> None:
        self.keys = set(keys)
        bags = [text_bag(text) for text in canonical_texts]
        self._pieces = {piece: i for i, piece in enumerate(sorted({p for b in bags for p in b}))}
        matrix = np.zeros((len(bags), len(self._pieces)), np.float64)  # (L, V)
        for row, bag in enumerate(bags):
            for piece, count in bag.items():
                matrix[row, self._pieces[piece]] = count
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self._matrix = matrix / np.where(norms > 0, norms, 1.0)
        self._cache: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def similarity(self, design: CheckedDesign) -> float:
        """The best cosine similarity of a parsed design's bag to any library bag."""
        if design.key is None or design.canonical is None:
            raise ValueError("similarity of a design that does not parse")
        if design.key in self.keys:
            return 1.0
        found = self._cache.get(design.key)
        if found is None:
            bag = text_bag(design.canonical)
            vector = np.zeros(len(self._pieces), np.float64)  # (V,)
            for piece, count in bag.items():
                if piece in self._pieces:
                    vector[self._pieces[piece]] = count
            norm = math.sqrt(sum(c * c for c in bag.values()))  # pieces outside count too
            products = self._matrix @ vector  # (L,)
            found = float(products.max()) / norm if norm and len(products) else 0.0
            self._cache[design.key] = found
        return found


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass
class Scoring:
    """Per-prompt values of every method on one metric, and that metric's failure floor."""

    values: dict[str, list[float | None]] = field(default_factory=dict)

    def floor(self) -> float:
        seen = [v for vs in self.values.values() for v in vs if v is not None]
        return min(seen) if seen else math.nan

    def filled(self, name: str) -> list[float]:
        floor = self.floor()
        return [floor if v is None else v for v in self.values[name]]

    def for_wins(self, name: str) -> list[float]:
        return [-math.inf if v is None else v for v in self.values[name]]


def per_prompt(runs: Sequence[MethodRun], metric: ScoreFn) -> Scoring:
    """The metric averaged over render seeds, per method and prompt (None: a failure)."""
    scoring = Scoring()
    for run in runs:
        scoring.values[run.name] = [
            mean([metric(s) for s in o.scores]) if o.scores else None for o in run.outcomes
        ]
    return scoring


def quality_per_prompt(runs: Sequence[MethodRun]) -> Scoring:
    """The sim's noise-free quality per method and prompt (None: a failure)."""
    scoring = Scoring()
    for run in runs:
        scoring.values[run.name] = [o.quality if o.scores else None for o in run.outcomes]
    return scoring


def win_rates(
    scoring: Scoring, names: Sequence[str], against: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Win rate of each method in `names` against each in `against` (failures lose)."""
    rates: dict[str, dict[str, float]] = {}
    for name in names:
        mine = scoring.for_wins(name)
        rates[name] = {other: win_rate(mine, scoring.for_wins(other)) for other in against}
    return rates


def summarize(
    run: MethodRun,
    heldout: Scoring,
    train: Scoring,
    quality: Scoring | None,
    library: LibraryIndex,
    training_score: ScoreFn,
) -> MethodSummary:
    """The reported numbers of one method."""
    outcomes = run.outcomes
    valid = [o.design for o in outcomes if o.design.valid]
    keys = [d.key for d in valid if d.key is not None]
    predicted = [o.predicted for o in outcomes if o.predicted is not None]
    gaps = [
        o.predicted - mean([training_score(s) for s in o.scores])
        for o in outcomes
        if o.predicted is not None and o.scores
    ]
    errors = Counter(error_kind(o.error) for o in outcomes if o.error is not None)
    return MethodSummary(
        name=run.name,
        label=run.label,
        heldout=mean(heldout.filled(run.name)),
        train=mean(train.filled(run.name)),
        quality=None if quality is None else mean(quality.filled(run.name)),
        valid=len(valid) / len(outcomes),
        failed=sum(o.error is not None for o in outcomes),
        errors=dict(sorted(errors.items())),
        distinct=distinct(keys),
        not_in_library=share_not_in(keys, library.keys) if keys else None,
        nn_similarity=mean([library.similarity(d) for d in valid]) if valid else None,
        predicted=mean(predicted) if predicted else None,
        gap=mean(gaps) if gaps else None,
        judge_calls=run.judge_calls,
        data_calls=run.data_calls,
        seconds=run.seconds,
    )
