"""The reward ensemble's settings, saved with every model (``config.json``).

One frozen dataclass holds everything that decides what a trained ensemble is and how it
scores: the training score, the architecture, the optimisation, and the two scoring
settings GRPO relies on (`kappa`, `floor`). Every combination is checked when the config is
made, so a bad setting fails before minutes of training, with a message that says what to
change. docs/reward.md explains each choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..judge.sim.scorers import HELDOUT_SCORER

MINILM = "minilm-frozen"
HF_PREFIX = "hf:"
ScoreTransform = Literal["none", "logit"]


class RewardConfigError(ValueError):
    """A reward setting (or a saved config) that cannot be used; the message says why."""


def parse_score_weights(pairs: list[str]) -> tuple[tuple[str, float], ...] | None:
    """Repeated ``--score-weight NAME=WEIGHT`` flags as `RewardConfig.score_weights` (None
    when there are none: every training scorer, weight 1)."""
    weights: list[tuple[str, float]] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            weights.append((name, float(value)))
        except ValueError:
            weights.append((name, math.nan))
        if not sep or not name or not math.isfinite(weights[-1][1]):
            raise RewardConfigError(
                f"--score-weight {pair!r}: expected NAME=WEIGHT, e.g. aesthetic=1.5"
            )
    return tuple(weights) or None


@dataclass(frozen=True)
class RewardConfig:
    """Settings of one reward ensemble (training and scoring); see docs/reward.md."""

    #: Number of ensemble members K. Members differ by seed and bootstrap sample.
    members: int = 5
    #: ``"minilm-frozen"`` (frozen MiniLM prompt encoder + learned workflow-token encoder,
    #: trains on a CPU in minutes) or ``"hf:<local dir>"`` (a Hugging Face text backbone
    #: with a regression head, reading "prompt [SEP] workflow text", fine-tuned; for GPUs).
    backbone: str = MINILM
    #: Training-score weights as (scorer name, weight) pairs; None: every scorer in the data
    #: except `heldout_scorer`, weight 1 each. The training score is the weighted mean of
    #: the standardized scorers.
    score_weights: tuple[tuple[str, float], ...] | None = None
    #: The evaluation scorer, never part of the training score (ComfyGen held out HPS v2.0).
    heldout_scorer: str = HELDOUT_SCORER
    #: Applied to each raw score before standardizing: ``"none"`` or ``"logit"`` (for scores
    #: that are probabilities in (0, 1), clipped to [1e-4, 1 - 1e-4]).
    score_transform: ScoreTransform = "none"
    #: Share of workflow designs (by a hash of the design id, not by the data) kept out of
    #: training, so that evaluation has designs no member has seen.
    holdout_workflows: float = 0.1
    #: Train each member on a bootstrap sample of (prompt, design) groups.
    bootstrap: bool = True
    #: Seed of member k is ``seed + k`` (initialisation, dropout, batch order, bootstrap).
    seed: int = 0
    #: Workflow tokens seen in fewer training designs than this share hashed rows.
    min_count: int = 2
    #: Hashed embedding rows for tokens outside the fitted vocabulary (unseen compositions).
    hash_buckets: int = 512
    #: Add pairwise crosses of a workflow's categorical settings (sampler x scheduler, ...).
    crosses: bool = True
    #: Width of the prompt and workflow representations.
    dim: int = 64
    #: Width of the hidden layer of the head that reads [p, w, p * w].
    hidden: int = 128
    #: Dropout on the prompt representation and in the head.
    dropout: float = 0.1
    #: Passes over each member's training sample.
    epochs: int = 15
    batch_size: int = 256
    #: Peak learning rate of AdamW (one-cycle schedule).
    lr: float = 3e-3
    weight_decay: float = 1e-4
    #: torch intra-op threads while training and predicting (the caller's setting is restored
    #: afterwards); the ops are small, and on a shared 2-core machine a second thread mostly
    #: waits for a busy core (measured under load: 1 thread 3.5-10K pairs/s, 2 threads 0.2-1.3K).
    threads: int = 1
    #: hf: backbones only: token limit of "prompt [SEP] workflow text" (longer: an error).
    max_length: int = 512
    #: hf: backbones only: learning rate of the backbone (the head uses `lr`).
    backbone_lr: float = 5e-5
    #: reward = mean - kappa * std over members; 0 is the plain mean.
    kappa: float = 1.0
    #: Reward of a workflow text that does not parse or validate, in training-score units
    #: (the training score has mean 0 and std about 1; valid designs rarely go below -1).
    floor: float = -2.0

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise RewardConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        checks = [
            (self.members >= 1, f"members must be >= 1, got {self.members}"),
            (
                self.backbone == MINILM
                or (self.backbone.startswith(HF_PREFIX) and len(self.backbone) > len(HF_PREFIX)),
                f"backbone must be {MINILM!r} or 'hf:<local dir>', got {self.backbone!r}",
            ),
            (
                self.score_transform in ("none", "logit"),
                f"score_transform must be 'none' or 'logit', got {self.score_transform!r}",
            ),
            (
                0.0 <= self.holdout_workflows < 1.0,
                f"holdout_workflows must be in [0, 1), got {self.holdout_workflows}",
            ),
            (self.min_count >= 1, f"min_count must be >= 1, got {self.min_count}"),
            (self.hash_buckets >= 1, f"hash_buckets must be >= 1, got {self.hash_buckets}"),
            (self.dim >= 1 and self.hidden >= 1, "dim and hidden must be >= 1"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
            (self.lr > 0 and self.backbone_lr > 0, "lr and backbone_lr must be > 0"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}"),
            (
                math.isfinite(self.kappa) and self.kappa >= 0,
                f"kappa must be a finite number >= 0 (0 is the plain mean), got {self.kappa}",
            ),
            (math.isfinite(self.floor), f"floor must be a finite number, got {self.floor}"),
        ]
        problems = [message for ok, message in checks if not ok]
        return problems + self._weight_problems()

    def _weight_problems(self) -> list[str]:
        if self.score_weights is None:
            return []
        names = [name for name, _ in self.score_weights]
        weights = [weight for _, weight in self.score_weights]
        problems = []
        if not names:
            problems.append("score_weights is empty; leave it None to weigh every scorer")
        if len(set(names)) != len(names):
            problems.append(f"score_weights names a scorer twice: {names}")
        if self.heldout_scorer in names:
            problems.append(
                f"score_weights includes the held-out scorer {self.heldout_scorer!r}; it is "
                "for evaluation only"
            )
        if any(not math.isfinite(w) or w < 0 for w in weights) or not sum(weights) > 0:
            problems.append(f"score_weights must be >= 0 with a positive sum, got {weights}")
        return problems

    @property
    def hf_dir(self) -> str | None:
        """The local directory of an ``hf:`` backbone, None for MiniLM."""
        return self.backbone[len(HF_PREFIX) :] if self.backbone.startswith(HF_PREFIX) else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.score_weights is not None:
            data["score_weights"] = [list(pair) for pair in self.score_weights]
        return data

    @staticmethod
    def from_json(data: Any) -> RewardConfig:
        """The config saved by `to_json`; every field must be there, and nothing else."""
        if not isinstance(data, dict):
            raise RewardConfigError("the reward config must be a JSON object")
        names = {f.name for f in fields(RewardConfig)}
        unknown, missing = sorted(set(data) - names), sorted(names - set(data))
        if unknown or missing:
            raise RewardConfigError(
                f"the reward config does not match this flowforge version "
                f"(unknown keys: {unknown or 'none'}; missing keys: {missing or 'none'})"
            )
        values = dict(data)
        if values["score_weights"] is not None:
            try:
                values["score_weights"] = tuple(
                    (str(name), float(weight)) for name, weight in values["score_weights"]
                )
            except (TypeError, ValueError):
                raise RewardConfigError("score_weights must be [name, weight] pairs") from None
        try:
            return RewardConfig(**values)
        except TypeError as error:
            raise RewardConfigError(f"the reward config has a wrong value: {error}") from None
