"""Library probes (``[refine] probes``): each refine round also judges, for every train
prompt, the library workflows the ensemble of the moment predicts best for that prompt among
those no earlier judgement paired it with.

Why: after the rounds the refitted ensemble knows which library workflow suits which prompt
(its own per-prompt pick beat the best fixed workflow on 76% of held-out prompts on sim
world 0), but it *underrates* those picks and overrates GRPO's new designs: on world 0 it
predicted its picks 2.11 (judged 2.52 in training score) and GRPO's designs 2.03 (judged
1.85; docs/evaluation.md, "What was tried"). GRPO optimises that ensemble, so reading the
prompt earned it little, and its policy wrote one design for most prompts. The rounds
judged only what the policies wrote, which showed the ensemble its errors off the library,
never its errors about its own best library picks. A probe judges exactly those: the pairs
the ensemble would stake the most on and has no judgement of. Active learning on both
sides of the comparison GRPO makes.

Which ensemble picks: the one the round's GRPO would otherwise have been shown last (round
1: the run's, round k: round k-1's refit), the same ``mean - kappa * std`` reward GRPO and
ensemble pairing read (`policy.sft.ensemble_rewards`, the table pairing computes). A pair
already judged (in the collection or an earlier round, matched by prompt id and text form)
is skipped for the next best, so a second round probes further down the ensemble's list
instead of judging a pair again. The render seeds follow `RefineStageConfig.seed` and the
round, on a stream of their own, so probes do not move the designs' render seeds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..workflow.textform import text_hash

PROBE_STREAM = 0x9B0BE  # the probes' render seeds' stream (the designs' is 0x5EED)


@dataclass(frozen=True)
class Probe:
    """One (train prompt, library workflow) pair to judge."""

    prompt_id: str
    prompt: str
    text: str  # the library workflow's text form, as the collection stored it

    @property
    def design_hash(self) -> str:
        """`textform.design_hash` of the workflow (`text_hash` of its text form)."""
        return text_hash(self.text)


def probe_pairs(
    prompts: Sequence[tuple[str, str]],
    texts: Sequence[str],
    rewards: NDArray[np.float64],
    judged: Collection[tuple[str, str]],
    per_prompt: int,
) -> list[Probe]:
    """For each (prompt id, prompt) of `prompts`, in order, its `per_prompt` best `texts` by
    `rewards` (row i: prompt i, column j: text j; ties to the earlier text) that are not
    in `judged` ((prompt id, text) pairs); fewer when fewer are left."""
    if rewards.shape != (len(prompts), len(texts)):
        raise ValueError(
            f"rewards has shape {rewards.shape}, expected ({len(prompts)}, {len(texts)})"
        )
    if per_prompt < 0:
        raise ValueError(f"per_prompt must be >= 0, got {per_prompt}")
    found: list[Probe] = []
    if per_prompt == 0:
        return found
    for row, (prompt_id, prompt) in enumerate(prompts):
        taken = 0
        for column in np.argsort(-rewards[row], kind="stable"):
            text = texts[int(column)]
            if (prompt_id, text) in judged:
                continue
            found.append(Probe(prompt_id, prompt, text))
            taken += 1
            if taken == per_prompt:
                break
    return found
