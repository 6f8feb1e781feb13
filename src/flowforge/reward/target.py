"""The training score: what every member learns to predict.

ComfyGen's recipe: standardize each scorer, then take a weighted combination. Here the
score of a judged item is

    y = sum_i w_i * (t(s_i) - mean_i) / std_i  /  sum_i w_i

over the training scorers i (every scorer of the data except the held-out one, unless
weights are given), with t the identity or the logit (``score_transform``), and each
scorer's mean and std taken over the training rows. The statistics are saved with the
model, so evaluation computes the same y on new data. y has mean 0; its std is at most 1
(less when scorers disagree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import RewardConfig, ScoreTransform

_LOGIT_CLIP = 1e-4


class TrainingScoreError(ValueError):
    """Data whose scores cannot make the training score (a scorer missing, constant, ...)."""


def transform(value: float, kind: ScoreTransform) -> float:
    """t(s): the identity, or logit(s) with s clipped to [1e-4, 1 - 1e-4]."""
    if kind == "none":
        return value
    clipped = min(max(value, _LOGIT_CLIP), 1.0 - _LOGIT_CLIP)
    return math.log(clipped / (1.0 - clipped))


@dataclass(frozen=True)
class TrainingScore:
    """The fitted definition of y (module docstring), saved in the model's ``config.json``."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    transform: ScoreTransform

    def __call__(self, scores: Mapping[str, float]) -> float:
        total = sum(self.weights)
        return (
            sum(
                w * (transform(scores[n], self.transform) - m) / s
                for n, w, m, s in zip(self.names, self.weights, self.means, self.stds, strict=True)
            )
            / total
        )

    def has_scores(self, scores: Mapping[str, float] | None) -> bool:
        return scores is not None and all(name in scores for name in self.names)

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "weights": list(self.weights),
            "means": list(self.means),
            "stds": list(self.stds),
            "transform": self.transform,
        }

    @staticmethod
    def from_json(data: Any) -> TrainingScore:
        try:
            score = TrainingScore(
                tuple(str(n) for n in data["names"]),
                tuple(float(w) for w in data["weights"]),
                tuple(float(m) for m in data["means"]),
                tuple(float(s) for s in data["stds"]),
                data["transform"],
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("not a training-score definition") from None
        sizes = {len(score.names), len(score.weights), len(score.means), len(score.stds)}
        if len(sizes) != 1 or not score.names or any(not s > 0 for s in score.stds):
            raise ValueError("a training-score definition needs equal lengths and stds > 0")
        if score.transform not in ("none", "logit"):
            raise ValueError(f"unknown score transform {score.transform!r}")
        return score


def fit_training_score(rows: Sequence[Mapping[str, float]], config: RewardConfig) -> TrainingScore:
    """The training score of `config` with statistics of `rows` (the training rows' scores)."""
    if not rows:
        raise TrainingScoreError("no scored triplets to train on")
    available = set.intersection(*(set(row) for row in rows))
    if config.score_weights is None:
        names = tuple(sorted(available - {config.heldout_scorer}))
        weights = tuple(1.0 for _ in names)
    else:
        names = tuple(name for name, _ in config.score_weights)
        weights = tuple(weight for _, weight in config.score_weights)
    missing = [name for name in names if name not in available]
    if not names or missing:
        raise TrainingScoreError(
            f"training scorers {missing or 'none'} are not in every scored triplet; the data "
            f"has {sorted(available)} (held out: {config.heldout_scorer})"
        )
    values = np.array([[transform(row[n], config.score_transform) for n in names] for row in rows])
    means, stds = values.mean(axis=0), values.std(axis=0)
    constant = [n for n, s in zip(names, stds, strict=True) if not s > 1e-12]
    if constant:
        raise TrainingScoreError(f"scorer(s) {constant} are constant in the training data")
    return TrainingScore(
        names,
        weights,
        tuple(float(m) for m in means),
        tuple(float(s) for s in stds),
        config.score_transform,
    )
