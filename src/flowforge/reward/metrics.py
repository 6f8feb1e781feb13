"""The reward ensemble's maths, as small pure functions (tested against hand-computed values).

Definitions (docs/reward.md):

- reward of a valid design: ``mean - kappa * std`` over the K members' predictions, std the
  population standard deviation (ddof 0: the spread of these members, not an estimate of
  some larger population's);
- Spearman: Pearson correlation of the average ranks (ties share their mean rank); NaN when
  either side is constant (no ranking to compare);
- pairwise accuracy: over the pairs whose actual scores differ, the share the prediction
  orders the same way, a predicted tie counting one half;
- top-1 regret: best actual score minus the actual score of the predicted best (predicted
  ties: the mean actual score of the tied designs): the quality lost by trusting the model;
- error by spread: predictions sorted into quantile bins of the members' std; per bin the
  mean std and the mean absolute error. If the spread means anything, error grows with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]


def member_stats(members: ArrayLike) -> tuple[Floats, Floats]:
    """Mean and population std over members of (N, K) predictions -> (N,), (N,)."""
    values = np.asarray(members, np.float64)
    return values.mean(axis=1), values.std(axis=1)


def penalized_reward(mean: ArrayLike, std: ArrayLike, kappa: float) -> Floats:
    """``mean - kappa * std``: pessimism where the members disagree (kappa 0: the mean)."""
    return np.asarray(mean, np.float64) - kappa * np.asarray(std, np.float64)


def average_ranks(values: ArrayLike) -> Floats:
    """Ranks 1..n, ties sharing the mean of their ranks ([10, 20, 20] -> [1, 2.5, 2.5])."""
    x = np.asarray(values, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1, dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return np.asarray(sums[inverse] / counts[inverse], np.float64)


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rho with average ranks; NaN for fewer than 2 items or a constant side."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else math.nan


def pairwise_counts(predicted: ArrayLike, actual: ArrayLike) -> tuple[float, int]:
    """(correctly ordered pairs, pairs with different actual scores); predicted ties 1/2."""
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    upper = np.triu_indices(len(a), k=1)
    dp = np.sign((p[:, None] - p[None, :])[upper])
    da = np.sign((a[:, None] - a[None, :])[upper])
    counted = da != 0
    correct = float((dp[counted] == da[counted]).sum() + 0.5 * (dp[counted] == 0).sum())
    return correct, int(counted.sum())


def top1_regret(predicted: ArrayLike, actual: ArrayLike) -> float:
    """Best actual score minus the (mean) actual score of the predicted-best design(s)."""
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if len(p) == 0:
        raise ValueError("top-1 regret of no designs is undefined")
    chosen = p == p.max()
    return float(a.max() - a[chosen].mean())


@dataclass(frozen=True)
class WithinPrompt:
    """Ranking quality within prompts (docs/reward.md), aggregated over prompts."""

    spearman: float  # mean over prompts with >= 3 designs and a defined rho
    pairwise_accuracy: float  # pooled over all within-prompt pairs
    top1_regret: float  # mean over prompts with >= 2 designs
    random_regret: float  # the same for a uniformly random pick: the scale of top1_regret
    prompts: int  # prompts with >= 2 designs
    pairs: int


def within_prompt(
    groups: Sequence[Sequence[int]], predicted: ArrayLike, actual: ArrayLike
) -> WithinPrompt:
    """Aggregate the ranking metrics over `groups` (item indices of one prompt each)."""
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    rhos, regrets, randoms = [], [], []
    correct, pairs = 0.0, 0
    for group in groups:
        if len(group) < 2:
            continue
        index = np.asarray(group)
        rho = spearman(p[index], a[index]) if len(group) >= 3 else math.nan
        if not math.isnan(rho):
            rhos.append(rho)
        good, total = pairwise_counts(p[index], a[index])
        correct, pairs = correct + good, pairs + total
        regrets.append(top1_regret(p[index], a[index]))
        randoms.append(float(a[index].max() - a[index].mean()))
    return WithinPrompt(
        spearman=float(np.mean(rhos)) if rhos else math.nan,
        pairwise_accuracy=correct / pairs if pairs else math.nan,
        top1_regret=float(np.mean(regrets)) if regrets else math.nan,
        random_regret=float(np.mean(randoms)) if randoms else math.nan,
        prompts=len(regrets),
        pairs=pairs,
    )


@dataclass(frozen=True)
class SpreadBin:
    """One quantile bin of the members' std: its range, mean std, mean |error|, count."""

    low: float
    high: float
    mean_std: float
    mean_error: float
    count: int


def error_by_spread(std: ArrayLike, error: ArrayLike, bins: int = 5) -> list[SpreadBin]:
    """Items sorted by std into `bins` equal-count bins; mean std and mean |error| per bin."""
    s, e = np.asarray(std, np.float64), np.abs(np.asarray(error, np.float64))
    if len(s) != len(e):
        raise ValueError(f"error_by_spread needs paired values, got {len(s)} and {len(e)}")
    order = np.argsort(s, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(s))):
        out.append(
            SpreadBin(
                low=float(s[chunk].min()),
                high=float(s[chunk].max()),
                mean_std=float(s[chunk].mean()),
                mean_error=float(e[chunk].mean()),
                count=len(chunk),
            )
        )
    return out
