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
SFT_DIR, REWARD_DIR, GRPO_DIR = "sft", "reward", "grpo"
#: The active-learning rounds (``[refine]``): RUN/refine/round-N/reward and the GRPO policy
#: the judge kept among .../grpo, .../grpo-2 of the last round (`final_policy`) replace
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


def refined(run: Path) -> Path:
    """Where the run's final ensemble and GRPO policy live: the last refine round's directory
    after finished refine rounds, else the run itself."""
    summary = refine_summary(run)
    return run if summary is None else run / REFINE / str(summary["final"])


def final_policy(run: Path) -> Path:
    """The run's GRPO policy to evaluate and design with: the one the judge kept in the last
    refine round (``policy`` of refine.json: ``grpo``, or ``grpo-2``... with several per
    round), else the run's own."""
    summary = refine_summary(run)
    return refined(run) / (GRPO_DIR if summary is None else str(summary.get("policy", GRPO_DIR)))


def grpo_start(run: Path) -> Path:
    """The policy the run's final GRPO started from, its KL tether and guidance's w = 0: the
    last refine round's re-paired SFT (``sft`` of refine.json, `RefineStageConfig.refit_sft`),
    else the run's SFT."""
    summary = refine_summary(run)
    if summary is not None and summary.get("sft"):
        return refined(run) / str(summary["sft"])
    return run / SFT_DIR


def run_design(run: Path) -> RunDesign:
    """The design setup of a finished run; ValueError naming what is missing."""
    base = refined(run)
    policy = final_policy(run)
    if not (policy / "config.json").is_file():
        raise ValueError(f"--run {run}: no trained GRPO policy in {policy}; finish `flowforge run`")
    report = run / EVALUATE / REPORT_JSON
    weight = None
    if report.is_file():
        choice = json.loads(report.read_text(encoding="utf-8")).get("guidance_choice")
        weight = float(choice["weight"]) if choice else None
    reference = grpo_start(run) if weight is not None and weight != 1.0 else None
    reward = base / REWARD_DIR
    return RunDesign(
        policy,
        reference,
        weight if reference is not None else None,
        reward if (reward / "config.json").is_file() else None,
    )
