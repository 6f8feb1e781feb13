"""Where a ``flowforge run`` directory keeps each stage's output (no heavy imports).

``flowforge design --run RUN`` reads a run without importing torch (the design command's
latency budget, docs/benchmarks.md), so the names live here rather than in ``stages.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Stage directories inside a run (the last three also the GRPO section's fixed path fields).
LIBRARY, COLLECT, COMFYGEN_FT, EVALUATE = "library", "collect", "comfygen_ft", "evaluate"
#: The ComfyGen-shaped collection ComfyGen-FT learns from (``[comfygen_ft] data = "grid"``).
COMFYGEN_DATA = "comfygen_data"
SFT_DIR, REWARD_DIR, GRPO_DIR = "sft", "reward", "grpo"
#: The active-learning rounds (``[refine]``): RUN/refine/round-N/reward and the GRPO policy
#: the judge kept among .../grpo, .../grpo-2 of the last round (`final_models`) replace
#: RUN/reward and RUN/grpo for the evaluation and for ``flowforge design --run`` when present.
REFINE = "refine"
#: RUN/refine/refine.json: written when the rounds finished (`refine_summary` reads it).
REFINE_SUMMARY = "refine.json"
#: RUN/stages/: each stage's marker (<stage>.json) and, run in its own process, its output
#: (<stage>.log).
STAGES_DIR = "stages"
#: RUN/evaluate/report.json: the evaluation's report (``evaluate.report.REPORT_JSON``).
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class RunDesign:
    """What ``flowforge design --run RUN`` uses: the run's GRPO policy, guided from its SFT
    policy with the weight its evaluation chose, ranked by its reward ensemble."""

    policy: Path
    reference: Path | None
    guidance: float | None
    reward: Path | None
    #: The best fixed workflow's text form when the run's hand-over guard found it better
    #: than the policy on validation prompts (``hand_over`` of report.json), else None.
    fixed: str | None = None
    #: The guard's scores (policy, best fixed), for the message that says why.
    guard_scores: tuple[float, float] | None = None


def refine_summary(run: Path) -> dict[str, Any] | None:
    """What finished refine rounds did (``RUN/refine/refine.json``), None without: then
    the run's own ensemble and GRPO policy are the ones to evaluate and design with."""
    path = run / REFINE / REFINE_SUMMARY
    if not path.is_file():
        return None
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return summary


def round_dir(number: int) -> str:
    """The directory of refine round `number` (from 1) inside RUN/refine."""
    return f"round-{number}"


@dataclass(frozen=True)
class FinalModels:
    """The models a finished run evaluates and designs with, read from refine.json once.

    Without finished refine rounds they are the run's own (RUN/reward, RUN/grpo, RUN/sft);
    after them, the last round's refitted ensemble, the GRPO policy the judge kept
    (``policy`` of refine.json: ``grpo``, or ``grpo-2``... with several per round) and the
    re-paired SFT that GRPO started from (``sft``, `RefineStageConfig.refit_sft`)."""

    #: The reward ensemble (ranks best-of-N, `flowforge design`'s candidates).
    reward: Path
    #: The GRPO policy.
    policy: Path
    #: The policy GRPO started from: its KL tether and guidance's w = 0.
    start: Path
    #: Judge calls the refine rounds consumed (0 without rounds): the final models' data cost
    #: beyond the collected triplets.
    refine_judge_calls: int


def final_models(run: Path) -> FinalModels:
    """Where a run's final ensemble, GRPO policy and GRPO start live (`FinalModels`)."""
    summary = refine_summary(run)
    if summary is None:
        return FinalModels(run / REWARD_DIR, run / GRPO_DIR, run / SFT_DIR, 0)
    base = run / REFINE / str(summary["final"])
    start = base / str(summary["sft"]) if summary.get("sft") else run / SFT_DIR
    return FinalModels(
        reward=base / REWARD_DIR,
        policy=base / str(summary.get("policy", GRPO_DIR)),
        start=start,
        refine_judge_calls=int(summary["judge_calls"]),
    )


def run_design(run: Path) -> RunDesign:
    """The design setup of a finished run; ValueError naming what is missing."""
    models = final_models(run)
    policy = models.policy
    if not (policy / "config.json").is_file():
        raise ValueError(f"--run {run}: no trained GRPO policy in {policy}; finish `flowforge run`")
    report = run / EVALUATE / REPORT_JSON
    weight, fixed, scores = None, None, None
    if report.is_file():
        data = json.loads(report.read_text(encoding="utf-8"))
        choice = data.get("guidance_choice")
        weight = float(choice["weight"]) if choice else None
        guard = data.get("hand_over")  # `evaluate.handover` (read here without its imports)
        if guard and guard.get("handed") == "best_fixed":
            if not isinstance(guard.get("fixed_text"), str) or not guard["fixed_text"]:
                raise ValueError(f"--run {run}: {report} hands over a fixed workflow it lacks")
            fixed = guard["fixed_text"]
            try:
                scores = (float(guard["policy_score"]), float(guard["fixed_score"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"--run {run}: {report} lacks the guard's scores") from None
    reference = models.start if weight is not None and weight != 1.0 else None
    reward = models.reward
    return RunDesign(
        policy,
        reference,
        weight if reference is not None else None,
        reward if (reward / "config.json").is_file() else None,
        fixed,
        scores,
    )
