"""Settings of an evaluation: what is compared, on which prompts and seeds (docs/evaluation.md).

`EvalConfig` holds every choice that changes the numbers of a report; `EvalInputs` names the
artefacts being compared (the library, the triplets, the reward ensemble and the policies).
Both are frozen and saved in ``report.json``, so a report says exactly what produced it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..data.prompts import sample_count_problem
from ..judge.sim.scorers import HELDOUT_SCORER

BestOfSource = Literal["grpo", "sft", "selected"]


class EvalError(ValueError):
    """An evaluation that cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one comparison of designers on held-out prompts."""

    #: Held-out prompts compared: the first N of the held-out split in sha256(id) order (a
    #: fixed sample mixing PartiPrompts and GenEval); None: every held-out prompt.
    prompts: int | None = 300
    #: Render seeds per prompt, the same for every method; a design's score on a prompt is
    #: the mean over its seeds (averages out the luck of one render, not a scorer's bias).
    seeds: int = 2
    #: Root of every evaluation seed: render seeds, sampling seeds, the oracle's seeds.
    seed: int = 0
    #: Written into every design's ``$NEGATIVE`` (use the collection's value).
    negative: str = ""
    #: The default single workflow: a shipped seed workflow's name (docs/evaluation.md: why).
    default_workflow: str = "sdxl_base"
    #: Best fixed workflow: only workflows judged on at least this many train prompts
    #: qualify, so one lucky judgement cannot make a workflow "the best".
    min_prompts: int = 3
    #: Retrieval (ComfyGen-IC analogue): how many of the most similar train prompts are
    #: pooled to pick a held-out prompt's workflow.
    retrieval_k: int = 16
    #: Guidance weights w swept for GRPO with guidance (w=0 is SFT, w=1 is GRPO).
    guidance_weights: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
    #: GRPO + guidance with w chosen by the judge on this many validation prompts (the first
    #: in sha256(id) order; None: all 247; 0: not run). Costs prompts x `select_seeds` x
    #: weights judge calls (1,235 with all), reported as data calls. All since session 32:
    #: over six draws (two worlds x three refine seeds) the choice on 50 took a w up to
    #: 0.029 below the best held-out w, and all 247 raised the mean of both worlds
    #: (docs/evaluation.md, "What was tried").
    select_prompts: int | None = None
    #: Renders per (selection prompt, weight).
    select_seeds: int = 1
    #: Best-of-N by predicted reward: candidates sampled per prompt.
    best_of_n: int = 8
    #: The policy whose candidates best-of-N ranks: ``selected`` is GRPO + guidance at the
    #: chosen w (what ``flowforge design --guidance W --samples N --reward R`` does).
    best_of_source: BestOfSource = "selected"
    #: Sampling temperature of every policy designer: `flowforge design`'s default
    #: (``policy.design.DESIGN_TEMPERATURE``), so the report measures what a user gets. At 1.0
    #: (the policies' own distributions) every policy scored lower on both sim worlds
    #: measured (docs/evaluation.md).
    temperature: float = 0.7
    #: Decode policies through the schema constraint (the product's decoding). Off: what
    #: the policy writes unaided; invalid designs then show up in `validity`.
    constrained: bool = True
    #: Token budget of one designed workflow.
    max_new_tokens: int = 384
    #: Prompts per ``generate`` batch.
    batch_size: int = 64
    #: Also run the library oracle (best library workflow per prompt by the judge): costs
    #: prompts x library x `oracle_seeds` judge calls.
    oracle: bool = True
    #: Renders per (prompt, library workflow) with which the oracle chooses; its own seeds,
    #: disjoint from the evaluation seeds, so its choice is not graded on the same luck.
    oracle_seeds: int = 1
    #: Also run the ensemble's own choices from the library (diagnostic references, no judge
    #: call): per prompt, the library workflow it predicts best (prompts x library
    #: predictions), and the one workflow it predicts best on average over 200 train
    #: prompts (200 x library predictions), the ensemble's answer to the best fixed workflow.
    ensemble_pick: bool = False
    #: The scorer never used in training, reported as the main quality number (ComfyGen
    #: held out HPS v2.0 the same way).
    heldout_scorer: str = HELDOUT_SCORER
    #: The hand-over guard (`evaluate.handover`): judge what ``flowforge design --run``
    #: hands over (best-of-N at the chosen w) against the best fixed workflow on this many
    #: validation prompts (the first in sha256(id) order; None: all 247; 0: no guard), one
    #: render each; when the policy scores lower, ``design --run`` hands over the best fixed
    #: workflow. Costs 2 judge calls per prompt; changes no row of the report.
    guard_prompts: int | None = None
    #: Items per ``Judge.score`` call.
    judge_batch: int = 256
    #: Tries per item for transient judge errors (``transient: ...``); then the error stays.
    max_attempts: int = 3
    #: torch intra-op threads while designing (restored afterwards); None keeps torch's.
    #: Sampling a tiny policy on a shared 2-core machine measured 10x faster with 1 than 2.
    threads: int | None = 1

    def __post_init__(self) -> None:
        problems = [message for ok, message in self._checks() if not ok]
        if problems:
            raise EvalError("; ".join(problems))

    def _checks(self) -> list[tuple[bool, str]]:
        weights = self.guidance_weights
        # 0 prompts: no guidance choice, no guard
        select = sample_count_problem("select_prompts", self.select_prompts, "validation", 0)
        guard = sample_count_problem("guard_prompts", self.guard_prompts, "validation", 0)
        return [
            (self.prompts is None or self.prompts >= 2, "prompts must be >= 2 (or None: all)"),
            (self.seeds >= 1 and self.oracle_seeds >= 1, "seeds and oracle_seeds must be >= 1"),
            (self.min_prompts >= 1, f"min_prompts must be >= 1, got {self.min_prompts}"),
            (self.retrieval_k >= 1, f"retrieval_k must be >= 1, got {self.retrieval_k}"),
            (all(math.isfinite(w) for w in weights), "guidance_weights must be finite"),
            (len(set(weights)) == len(weights), f"guidance_weights repeat a value: {weights}"),
            (self.best_of_n >= 2, f"best_of_n must be >= 2 (1: the policy), not {self.best_of_n}"),
            (
                self.best_of_source in ("grpo", "sft", "selected"),
                "best_of_source must be 'grpo', 'sft' or 'selected'",
            ),
            (select is None, select or ""),
            (guard is None, guard or ""),
            (self.select_seeds >= 1, "select_seeds must be >= 1"),
            (self.temperature > 0, f"temperature must be > 0 (sampling), got {self.temperature}"),
            (self.max_new_tokens >= 2, "max_new_tokens must be >= 2"),
            (self.batch_size >= 1 and self.judge_batch >= 1, "batch sizes must be >= 1"),
            (self.max_attempts >= 1, "max_attempts must be >= 1"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1 or None"),
            (bool(self.default_workflow), "default_workflow must name a shipped seed workflow"),
            (bool(self.heldout_scorer), "heldout_scorer must name a scorer"),
        ]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["guidance_weights"] = list(self.guidance_weights)
        return data


@dataclass(frozen=True)
class EvalInputs:
    """The artefacts compared. A method whose input is missing is reported as not run."""

    #: The workflow library every training stage drew from (directory of API JSON).
    library: Path
    #: Judged triplets on train prompts: a collection run, a Parquet export or an HF dataset.
    triplets: Path
    #: The reward ensemble (best-of-N, predicted-vs-judged gap, the training score).
    reward: Path | None = None
    #: The SFT policy (also the reference of guidance unless `start` is given).
    sft: Path | None = None
    #: The ComfyGen-FT (score-conditioned SFT) policy.
    comfygen_ft: Path | None = None
    #: The GRPO policy directory (with its ``log.jsonl``).
    grpo: Path | None = None
    #: Judgements GRPO learned from beyond the triplets (a refine round's: the refitted
    #: ensemble saw them), charged to every GRPO method's data calls.
    grpo_data_calls: int = 0
    #: The policy GRPO started from when it is not `sft` (a refine run's re-paired SFT):
    #: guidance's reference (w = 0), and a method of its own.
    start: Path | None = None

    def to_json(self) -> dict[str, str | int | None]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
