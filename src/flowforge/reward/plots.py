"""The two pictures of ``reward eval`` (matplotlib, Agg backend: no display needed).

- ``pred_vs_actual.png``: the ensemble's mean prediction against the reference score, one
  panel per split. Within-prompt order is what counts, so a curved cloud is fine; a wide
  one is not.
- ``error_vs_spread.png``: mean |error| per quantile bin of the members' std, one line per
  split. A rising line means the spread flags the predictions not to trust, which is what
  ``reward = mean - kappa * std`` assumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..plotting import pyplot, save

if TYPE_CHECKING:
    from .evaluate import Units

PRED_VS_ACTUAL = "pred_vs_actual.png"
ERROR_VS_SPREAD = "error_vs_spread.png"
_MAX_POINTS = 4000
_DPI = 100


def plot_predicted_vs_actual(
    out: Path,
    units: Units,
    mean: NDArray[np.float64],
    split_index: dict[str, NDArray[np.int64]],
) -> Path:
    """Scatter of predicted mean vs reference per split (at most 4,000 points each)."""
    plt = pyplot()
    splits = list(split_index)
    fig, axes = plt.subplots(1, max(len(splits), 1), figsize=(4 * max(len(splits), 1), 4))
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    for ax, split in zip(axes, splits, strict=False):
        index = split_index[split]
        if len(index) > _MAX_POINTS:
            index = rng.choice(index, _MAX_POINTS, replace=False)
        ax.scatter(units.actual[index], mean[index], s=3, alpha=0.3)
        ax.set_title(f"{split} ({len(split_index[split]):,} units)")
        ax.set_xlabel(f"actual ({units.reference})")
        ax.set_ylabel("predicted (ensemble mean, training-score units)")
    return save(fig, out / PRED_VS_ACTUAL, _DPI)


def plot_error_vs_spread(out: Path, splits: dict[str, Any]) -> Path:
    """Mean |error| against mean std per spread-quantile bin, one line per split."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for split, metrics in splits.items():
        bins = metrics["error_by_spread"]
        if bins:
            ax.plot(
                [b["mean_std"] for b in bins],
                [b["mean_error"] for b in bins],
                marker="o",
                label=split,
            )
    ax.set_xlabel("members' std (bin mean)")
    ax.set_ylabel("|ensemble mean - observed training score| (bin mean)")
    ax.set_title("Does the spread predict the error?")
    ax.legend()
    return save(fig, out / ERROR_VS_SPREAD, _DPI)
