"""What the library baselines know: judged triplets on train prompts, reduced to choices.

ComfyGen's baselines choose among known workflows using judgements already paid for. Here
they read the collection's triplets (train prompts only) through the training score
(the standardized training scorers; never the held-out scorer):

- `best_fixed`: the one workflow with the best mean training score over all its triplets,
  among workflows judged on at least `min_prompts` prompts, used for every prompt;
- `RetrievalTable`: per train prompt, the judged workflows and their scores, for the
  retrieval designer (ComfyGen-IC's spirit: what worked for similar prompts).

A judgement with an error is skipped here (it has no score), and counted by the caller.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..data.export import Triplet
from .config import EvalError

TrainingScoreFn = Callable[[Mapping[str, float]], float]


@dataclass(frozen=True)
class ScoredRow:
    """One scored triplet reduced to what the baselines read."""

    prompt: str
    text: str  # the workflow's text form (placeholders)
    score: float  # its training score


@dataclass(frozen=True)
class FixedChoice:
    """The best fixed workflow and the evidence for it."""

    text: str
    mean_score: float
    prompts: int  # distinct train prompts it was judged on
    candidates: int  # workflows that qualified


def scored_rows(triplets: Sequence[Triplet], score: TrainingScoreFn) -> list[ScoredRow]:
    """The triplets that have scores, each with its training score."""
    return [
        ScoredRow(t.prompt, t.workflow_text, score(t.scores))
        for t in triplets
        if t.scores is not None
    ]


def best_fixed(rows: Sequence[ScoredRow], min_prompts: int) -> FixedChoice:
    """The workflow with the highest mean training score (ties: the smaller text, so the
    choice does not depend on row order) among those judged on >= `min_prompts` prompts."""
    totals: dict[str, list[float]] = defaultdict(list)
    prompts: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        totals[row.text].append(row.score)
        prompts[row.text].add(row.prompt)
    qualified = [text for text in totals if len(prompts[text]) >= min_prompts]
    if not qualified:
        most = max((len(p) for p in prompts.values()), default=0)
        raise EvalError(
            f"no workflow was judged on {min_prompts} train prompts (at most {most}); "
            "lower min_prompts or collect more pairs per workflow"
        )
    means = {text: sum(totals[text]) / len(totals[text]) for text in qualified}
    text = min(qualified, key=lambda t: (-means[t], t))
    return FixedChoice(text, means[text], len(prompts[text]), len(qualified))


class RetrievalTable:
    """Per train prompt: each judged workflow's summed score and count (for pooled means)."""

    def __init__(self, rows: Sequence[ScoredRow]) -> None:
        table: dict[str, dict[str, list[float]]] = defaultdict(dict)
        for row in rows:
            entry = table[row.prompt].setdefault(row.text, [0.0, 0.0])
            entry[0] += row.score
            entry[1] += 1.0
        if not table:
            raise EvalError("retrieval needs scored triplets; the data has none")
        self.prompts: list[str] = sorted(table)
        self._table = table

    def best_over(self, prompts: Sequence[str]) -> str:
        """The workflow with the best mean training score over the triplets of `prompts`."""
        pooled: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for prompt in prompts:
            for text, (total, count) in self._table[prompt].items():
                pooled[text][0] += total
                pooled[text][1] += count
        return min(pooled, key=lambda t: (-pooled[t][0] / pooled[t][1], t))
