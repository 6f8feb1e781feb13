"""The report's pictures (matplotlib, Agg backend: no display needed).

- ``scores.png``: per-prompt held-out scores of every method (box plots; failures at the
  floor, as in the means), so a mean that hides a long tail shows it.
- ``guidance.png``: the w sweep: judged held-out score (left); judged training score and
  the ensemble's prediction (right, same units). Prediction rising while the judged score
  falls is reward hacking.
- ``grpo.png``: the GRPO run's per-step log (``log.jsonl``): reward, KL to SFT, valid
  share, distinct designs and share not in the library per batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..plotting import pyplot, save

_DPI = 110
SCORES = "scores.png"
GUIDANCE = "guidance.png"
GRPO = "grpo.png"
GRPO_LOG = "log.jsonl"
GRPO_KEYS = ("reward_mean", "kl", "valid_share", "distinct", "novel_share")


def plot_all(out: Path, data: dict[str, Any], grpo_dir: Path | None) -> list[Path]:
    """Every plot the data allows; the paths written."""
    written = [plot_scores(out / SCORES, data)]
    if len(data["guidance_sweep"]) >= 2:
        written.append(plot_guidance(out / GUIDANCE, data["guidance_sweep"]))
    log = grpo_dir / GRPO_LOG if grpo_dir is not None else None
    if log is not None and log.is_file():
        rows = [json.loads(line) for line in log.read_text("utf-8").splitlines() if line.strip()]
        if rows:
            written.append(plot_grpo(out / GRPO, rows))
    return written


def plot_scores(path: Path, data: dict[str, Any]) -> Path:
    """Box plots of the per-prompt held-out score of each method."""
    plt = pyplot()
    labels = [m["label"] for m in data["methods"]]
    values = [data["per_prompt"]["heldout"][m["name"]] for m in data["methods"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2), 4.5))
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(f"held-out score ({data['config']['heldout_scorer']})")
    ax.set_title(f"{len(data['prompts'])} held-out prompts, judge {data['judge']['id']}")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path, _DPI)


def plot_guidance(path: Path, sweep: list[dict[str, Any]]) -> Path:
    """Judged scores and the ensemble's prediction against w."""
    plt = pyplot()
    w = [p["w"] for p in sweep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(w, [p["heldout"] for p in sweep], "o-", label="held-out score")
    left.set_xlabel("guidance weight w (0: GRPO's start, 1: GRPO)")
    left.set_ylabel("judged held-out score")
    right.plot(w, [p["train"] for p in sweep], "o-", label="judged training score")
    predicted = [p["predicted"] for p in sweep]
    if all(v is not None for v in predicted):
        right.plot(w, predicted, "s--", label="ensemble prediction")
    right.set_xlabel("guidance weight w")
    right.set_ylabel("training-score units")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path, _DPI)


def plot_grpo(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One small panel per logged GRPO metric against the step."""
    plt = pyplot()
    keys = [k for k in GRPO_KEYS if all(k in row for row in rows)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 3))
    axes = axes if len(keys) > 1 else [axes]
    steps = [row["step"] for row in rows]
    for ax, key in zip(axes, keys, strict=False):
        ax.plot(steps, [row[key] for row in rows], lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    return save(fig, path, _DPI)
