"""The hand-over guard (`evaluate.handover`): the policy method against the best fixed
workflow on validation prompts, judged on the same render seed per prompt."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from flowforge.evaluate.designers import ScoreItems
from flowforge.evaluate.handover import HandOver, judge_hand_over
from flowforge.evaluate.judging import check_design
from flowforge.judge.base import JudgeItem, JudgeResult
from flowforge.workflow.library import load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import to_text

CATALOG = default_catalog()
SEEDS = load_seed_library()
NAMES = sorted(SEEDS)
FIXED, OTHER = (to_text(SEEDS[name], CATALOG)[0] for name in NAMES[:2])
PROMPTS = ["a red bench", "two cows", "a castle at dusk"]


class Written:
    """A designer that writes the given texts, in order."""

    judge_calls = 0

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        assert len(prompts) == len(seeds) == len(self.texts)
        return self.texts


def scorer(fixed: float, other: float) -> tuple[list[JudgeItem], ScoreItems]:
    """A judge scoring the fixed workflow `fixed` and any other design `other` (`fill` marks
    which is which in the prompt); it records the items it saw."""
    seen: list[JudgeItem] = []

    def score_items(items: Sequence[JudgeItem]) -> list[JudgeResult]:
        seen.extend(items)
        return [JudgeResult({"t": fixed if i.prompt.startswith("F:") else other}) for i in items]

    return seen, score_items


def fill(text: str, prompt: str, seed: int) -> JudgeItem:
    # the prompt carries which design it is, so the fake judge can tell them apart
    mark = "F:" if text == check_design(FIXED, CATALOG).canonical else "P:"
    return JudgeItem(mark + prompt, {"text": text}, seed)


def guard(
    policy_texts: Sequence[str], fixed: float, other: float
) -> tuple[HandOver, list[JudgeItem]]:
    seen, score_items = scorer(fixed, other)
    verdict = judge_hand_over(
        "best_of_8",
        Written(policy_texts),
        FIXED,
        PROMPTS,
        lambda text: check_design(text, CATALOG),
        score_items,
        fill,
        lambda s: s["t"],
    )
    return verdict, seen


@pytest.mark.parametrize(
    ("fixed", "other", "handed"),
    [(0.2, 0.5, "policy"), (0.5, 0.2, "best_fixed"), (0.4, 0.4, "policy")],  # ties: policy
)
def test_the_better_mean_training_score_is_handed_over(
    fixed: float, other: float, handed: str
) -> None:
    verdict, seen = guard([OTHER] * 3, fixed, other)
    assert verdict.handed == handed
    assert verdict.policy_score == pytest.approx(other)
    assert verdict.fixed_score == pytest.approx(fixed)
    assert verdict.prompts == 3 and verdict.judge_calls == 6 == len(seen)
    assert verdict.fixed_text == FIXED and verdict.method == "best_of_8"
    # each prompt: the policy's design and the fixed workflow on the same render seed
    by_prompt: dict[str, set[int]] = {}
    for item in seen:
        by_prompt.setdefault(item.prompt[2:], set()).add(item.seed)
    assert set(by_prompt) == set(PROMPTS) and all(len(s) == 1 for s in by_prompt.values())


def test_a_design_that_cannot_be_judged_counts_as_the_worst_score_seen() -> None:
    # one invalid policy design: not judged, scored as the worst of its judged designs
    verdict, seen = guard([OTHER, "garbage", OTHER], 0.45, 0.5)
    assert verdict.judge_calls == 5 == len(seen)
    assert verdict.policy_score == pytest.approx(0.5)
    verdict, _ = guard(["garbage"] * 3, 0.45, 0.5)  # nothing judged: 0.0, the fixed wins
    assert verdict.policy_score == 0.0 and verdict.handed == "best_fixed"


def test_no_prompts_is_an_error() -> None:
    with pytest.raises(ValueError, match="validation prompts"):
        judge_hand_over("m", Written([]), FIXED, [], print, print, fill, len)  # type: ignore[arg-type]


def test_the_policys_designs_are_judged_as_written() -> None:
    """As in the evaluation (`judging.judged_requests`): the canonical text names a design
    but can fill its text slots differently from the design the user is handed."""
    written = OTHER.replace(" ", "  ", 1)  # extra spaces: the same design, spelled otherwise
    assert check_design(written, CATALOG).canonical == check_design(OTHER, CATALOG).canonical
    _, seen = guard([written] * 3, 0.2, 0.5)
    assert [i.workflow["text"] for i in seen if i.prompt.startswith("P:")] == [written] * 3
