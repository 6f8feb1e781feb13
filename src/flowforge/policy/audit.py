"""Judged audits during GRPO: the judge scores a few of the policy's own samples, and a small
correction model learns where the frozen ensemble is wrong about what the policy now writes.

Why: the ensemble learned from library workflows. GRPO leaves the library (most of its
designs are new) and finds, on some seeds, a family of designs every member overrates
together: on sim world 0 with GRPO seed 2, distilled sampler settings (5 steps, CFG 2,
sgm_uniform) with a full SDXL checkpoint, predicted 1.8-2.6 and judged near the floor
(docs/grpo.md). ``kappa`` cannot see an error all members share; only a judgement can. So
every `audit_every` steps GRPO sends `audit_samples` of its batch to the judge (one render
each, through the Judge interface only) and keeps the gap ``prediction - judged training
score`` of each. A ridge regression on the designs' text pieces (``Class`` and
``Class.input=value`` per node, as the report's nearest-neighbour similarity reads them)
fits those gaps, and every later reward is ``ensemble reward - predicted gap``. The pieces
generalise across a family (every variant that shares ``steps=5`` and the checkpoint gets
part of the correction) where a per-design table would be whack-a-mole; the ridge keeps a
few noisy renders from moving much. An intercept is fitted and not applied: a constant
shift of every reward leaves the group-relative advantages unchanged.

`AuditLog` is the state (what was judged, and the fit); it is saved with every checkpoint so
a resumed run repeats exactly. `JudgeAuditor` is the bridge to a real Judge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..data.plan import RequestTemplate
from ..evaluate.metrics import text_bag
from ..judge.base import Judge, JudgeItem
from ..reward.store import read_model
from ..reward.target import TrainingScore

AUDIT_FILE = "audits.json"


class Auditor(Protocol):
    """What GRPO needs of a judge: the judged training score of designs for prompts."""

    def judge(
        self, prompts: Sequence[str], texts: Sequence[str], seeds: Sequence[int]
    ) -> list[float | None]:
        """One judged training score per (prompt, design text, render seed); None when the
        judge returned an error for it."""
        ...


class JudgeAuditor:
    """An `Auditor` over a `Judge`: each design written into the request exactly as
    collection does (`RequestTemplate`: prompt, negative, seed), its scores turned into the
    ensemble's training score."""

    def __init__(self, judge: Judge, training_score: TrainingScore, negative: str = "") -> None:
        self.judge_ = judge
        self.training_score = training_score
        self.negative = negative

    @staticmethod
    def for_ensemble(judge: Judge, reward_dir: Path, negative: str = "") -> JudgeAuditor:
        """The auditor of a GRPO run against the ensemble in `reward_dir`: the judged scores
        become that ensemble's training score (what its predictions are in)."""
        return JudgeAuditor(judge, read_model(reward_dir).training_score, negative)

    def judge(
        self, prompts: Sequence[str], texts: Sequence[str], seeds: Sequence[int]
    ) -> list[float | None]:
        items = [
            JudgeItem(prompt, RequestTemplate(text, self.negative).fill(prompt, seed), seed)
            for prompt, text, seed in zip(prompts, texts, seeds, strict=True)
        ]
        results = self.judge_.score(items)
        if len(results) != len(items):
            raise ValueError(f"the judge returned {len(results)} results for {len(items)} items")
        return [
            self.training_score(r.scores)
            if r.scores is not None and self.training_score.has_scores(r.scores)
            else None
            for r in results
        ]


def text_pieces(text: str) -> set[str]:
    """The pieces of a design's text form the report's similarity reads (`metrics.text_bag`:
    ``Class`` and ``Class.input=value`` per node line) without links ``@n.k`` and
    placeholders ``$...``: those name positions, not choices."""
    pieces: set[str] = set()
    for piece in text_bag(text):
        _, dot, part = piece.partition(".")
        value = part.partition("=")[2]
        if not dot or (value and not value.startswith(("@", "$"))):
            pieces.add(piece)
    return pieces


@dataclass
class AuditLog:
    """The audits so far (design text, gap) and the ridge fit of gap on text pieces."""

    ridge: float
    texts: list[str] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    judge_calls: int = 0
    _weights: dict[str, float] = field(default_factory=dict, repr=False)

    def record(
        self, texts: Sequence[str], predicted: Sequence[float], judged: Sequence[float | None]
    ) -> list[float]:
        """Add one audit (every item was a judge call; failed ones teach nothing) and refit;
        returns the gaps of the judged items."""
        self.judge_calls += len(texts)
        new = [
            (text, float(p) - j)
            for text, p, j in zip(texts, predicted, judged, strict=True)
            if j is not None and math.isfinite(j) and math.isfinite(float(p))
        ]
        self.texts.extend(t for t, _ in new)
        self.gaps.extend(g for _, g in new)
        self._fit()
        return [g for _, g in new]

    def correction(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """The predicted gap of each design (0 for pieces never audited; no intercept)."""
        w = self._weights
        return np.array([sum(w.get(p, 0.0) for p in text_pieces(t)) for t in texts])

    def _fit(self) -> None:
        """Ridge regression of the centred gaps on binary piece features (dual form: the
        audits are fewer than the pieces)."""
        if not self.gaps:
            self._weights = {}
            return
        vocab = sorted({p for t in self.texts for p in text_pieces(t)})
        index = {p: i for i, p in enumerate(vocab)}
        x = np.zeros((len(self.texts), len(vocab)))
        for row, text in enumerate(self.texts):
            x[row, [index[p] for p in text_pieces(text)]] = 1.0
        x_mean = x.mean(axis=0)
        y = np.asarray(self.gaps) - np.mean(self.gaps)
        xc = x - x_mean
        alpha = np.linalg.solve(xc @ xc.T + self.ridge * np.eye(len(y)), y)
        weights = xc.T @ alpha
        self._weights = {p: float(w) for p, w in zip(vocab, weights, strict=True) if w != 0.0}

    def to_json(self) -> dict[str, Any]:
        return {
            "ridge": self.ridge,
            "judge_calls": self.judge_calls,
            "texts": self.texts,
            "gaps": self.gaps,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> AuditLog:
        log = AuditLog(float(data["ridge"]), list(data["texts"]), list(data["gaps"]))
        log.judge_calls = int(data["judge_calls"])
        log._fit()
        return log

    def save(self, folder: Path) -> None:
        (folder / AUDIT_FILE).write_text(json.dumps(self.to_json()), encoding="utf-8")

    @staticmethod
    def load(folder: Path, ridge: float) -> AuditLog:
        """The log saved in `folder` (a checkpoint), or an empty one."""
        path = folder / AUDIT_FILE
        if not path.is_file():
            return AuditLog(ridge)
        return AuditLog.from_json(json.loads(path.read_text(encoding="utf-8")))
