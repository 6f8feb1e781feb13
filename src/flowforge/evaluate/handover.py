"""What ``flowforge design --run RUN`` hands a user: the run's policy, or the best fixed
workflow when the policy loses to it on validation prompts (the hand-over guard).

A run's GRPO draw can end below the best fixed workflow of its own library: in session 28 a
default-settings draw on world 0 scored 0.407 against 0.439 on held-out prompts. The
evaluation shows that afterwards, on held-out prompts no choice may read. The guard looks
before, on the validation prompts (`flowforge.data.prompts`): the policy method ``design
--run`` uses (best-of-N by predicted reward at the chosen guidance weight) and the best fixed
workflow design for the validation prompts (all 247 by default, ``[evaluate]
guard_prompts``), each design is judged once on render seeds of the guard's own, and the
higher mean training score is what ``design --run`` hands over (ties: the policy). Why
validation prompts that include GenEval's (split v3): on PartiPrompts alone the failed
draw's best-of-8 beat the best fixed workflow (0.929 against 0.758 in training score), on
spare held-out GenEval prompts it lost (1.687 against 1.881), and two thirds of the
held-out prompts are GenEval's. On all 247 validation prompts that draw is a tie (1.357
against 1.361: the guard hands over the best fixed workflow; on held-out prompts its
best-of-8 scored 0.445 against 0.435): the guard settles clear losses, and a close call is
a close call either way (docs/evaluation.md, "What `flowforge design --run` hands over").

The guard changes no row of the report: every method is evaluated as before, and the
report says which one a user gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .designers import Designer, FillFn, ScoreItems, derive_seed, mean_filling_worst
from .judging import CheckedDesign

#: What ``flowforge design --run`` hands over: the run's policy, or its best fixed workflow.
Handed = Literal["policy", "best_fixed"]


@dataclass(frozen=True)
class HandOver:
    """The guard's verdict and its evidence (``hand_over`` of report.json)."""

    #: The policy method judged: what ``flowforge design --run`` does (report name).
    method: str
    #: ``policy``: design --run uses the run's policy; ``best_fixed``: it hands over
    #: `fixed_text`.
    handed: Handed
    #: Mean training score on the validation prompts (an unjudgeable design counts as the
    #: worst score seen, as in the run's other choices).
    policy_score: float
    fixed_score: float
    prompts: int
    judge_calls: int
    #: The best fixed workflow's text form (placeholders for prompt, negative and seed).
    fixed_text: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge_hand_over(
    method: str,
    policy: Designer,
    fixed_text: str,
    prompts: Sequence[str],
    check: Callable[[str], CheckedDesign],
    score_items: ScoreItems,
    fill: FillFn,
    training_score: Callable[[Mapping[str, float]], float],
) -> HandOver:
    """The guard on `prompts` (validation prompts): `policy` (report name `method`) designs
    once per prompt, the fixed workflow stands for itself, both judged on the same render
    seed per prompt; the module docstring says why."""
    if not prompts:
        raise ValueError("the hand-over guard needs validation prompts")
    design_seeds = [derive_seed("hand-over", "design", p) for p in prompts]
    render_seeds = [derive_seed("hand-over", "render", p) for p in prompts]
    designed = policy.design(prompts, design_seeds)
    scores, calls = [], 0
    for texts in (designed, [fixed_text] * len(prompts)):
        checked = [check(text) for text in texts]
        judged = [k for k, c in enumerate(checked) if c.judgeable]
        items = [fill(texts[k], prompts[k], render_seeds[k]) for k in judged]  # as written
        results = score_items(items) if items else []
        calls += len(items)
        values: list[float | None] = [None] * len(prompts)
        for k, result in zip(judged, results, strict=True):
            if result.scores is not None:
                values[k] = training_score(result.scores)
        scores.append(mean_filling_worst(values))
    policy_score, fixed_score = scores
    handed: Handed = "policy" if policy_score >= fixed_score else "best_fixed"
    return HandOver(method, handed, policy_score, fixed_score, len(prompts), calls, fixed_text)
