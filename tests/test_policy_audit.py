"""GRPO's judged audits (policy/audit.py): the pieces a correction reads, the ridge fit that
learns where the ensemble is wrong, its saved state, and the bridge to a real Judge."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from policy_helpers import library_texts

from flowforge.judge.base import JudgeItem, JudgeResult
from flowforge.judge.sim.judge import SimJudge
from flowforge.policy.audit import AuditLog, JudgeAuditor, text_pieces
from flowforge.reward.target import TrainingScore

TEXT = """1 CheckpointLoaderSimple ckpt_name=albedobaseXL_v13.safetensors
2 CLIPTextEncode clip=@1.1 text=$PROMPT
5 KSampler cfg=2.0 model=@1.0 positive=@2.0 seed=$SEED steps=5"""


def test_pieces_are_classes_and_chosen_values_not_links_or_placeholders() -> None:
    assert text_pieces(TEXT) == {
        "CheckpointLoaderSimple",
        "CheckpointLoaderSimple.ckpt_name=albedobaseXL_v13.safetensors",
        "CLIPTextEncode",
        "KSampler",
        "KSampler.cfg=2.0",
        "KSampler.steps=5",
    }


def variant(steps: int, cfg: float, ckpt: str = "albedobaseXL_v13") -> str:
    return (
        f"1 CheckpointLoaderSimple ckpt_name={ckpt}.safetensors\n"
        f"5 KSampler cfg={cfg} model=@1.0 seed=$SEED steps={steps}"
    )


def test_the_correction_learns_a_family_the_ensemble_overrates() -> None:
    # the ensemble overrates 5-step designs by 2 and is right about 30-step ones
    log = AuditLog(ridge=1.0)
    texts = [variant(5, 2.0), variant(5, 2.5), variant(30, 7.0), variant(30, 6.0)] * 3
    predicted = [2.0 if "steps=5" in t else 1.0 for t in texts]
    judged: list[float | None] = [0.0 if "steps=5" in t else 1.0 for t in texts]
    gaps = log.record(texts, predicted, judged)
    assert gaps == [2.0 if "steps=5" in t else 0.0 for t in texts]
    # a variant never audited that shares the piece gets most of the correction
    unseen_fast, unseen_slow = variant(5, 3.0), variant(30, 5.0)
    fast, slow = log.correction([unseen_fast, unseen_slow])
    assert fast - slow > 1.0
    # pieces never audited (or in every audit) get no correction; no intercept is applied
    assert log.correction([variant(20, 4.0, ckpt="other")])[0] == 0.0


def test_few_noisy_audits_move_the_correction_less_than_many() -> None:
    def fitted(repeats: int) -> float:
        log = AuditLog(ridge=4.0)
        texts = [variant(5, 2.0), variant(30, 7.0)] * repeats
        log.record(texts, [1.0] * len(texts), [0.0 if "steps=5" in t else 1.0 for t in texts])
        a, b = log.correction([variant(5, 2.0), variant(30, 7.0)])
        return float(a - b)

    assert 0 < fitted(1) < fitted(20) <= 2.0 + 1e-9


def test_failed_judgements_are_charged_and_teach_nothing_and_the_state_round_trips(
    tmp_path: Path,
) -> None:
    log = AuditLog(ridge=1.0)
    log.record([variant(5, 2.0), variant(30, 7.0)], [2.0, 1.0], [None, 1.0])
    log.record([variant(5, 2.0), variant(30, 7.0)], [2.0, float("nan")], [0.0, 1.0])
    assert log.judge_calls == 4 and len(log.gaps) == 2
    log.save(tmp_path)
    again = AuditLog.load(tmp_path, ridge=99.0)  # a saved log keeps its own ridge
    probe = [variant(5, 2.5), variant(30, 6.0)]
    assert again.judge_calls == 4 and again.ridge == 1.0
    assert np.array_equal(again.correction(probe), log.correction(probe))
    assert AuditLog.load(tmp_path / "nothing", ridge=2.0).gaps == []


class FailingEvery2nd:
    """A judge that fails every second item (a render error), scores the others 0.5."""

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        return [
            JudgeResult(None, "render: out of memory")
            if i % 2
            else JudgeResult({"aesthetic": 0.5, "alignment": 0.5, "heldout_preference": 0.1})
            for i in range(len(items))
        ]

    def object_info(self) -> dict[str, Any]:
        return {}


SCORE = TrainingScore(("aesthetic", "alignment"), (1.0, 1.0), (0.4, 0.3), (0.1, 0.2), "none")


def test_the_judge_auditor_writes_the_request_and_returns_training_scores() -> None:
    auditor = JudgeAuditor(FailingEvery2nd(), SCORE, negative="blurry")  # type: ignore[arg-type]
    text = library_texts(20)[0]
    judged = auditor.judge(["a red fox", "a blue bird"], [text, text], [1, 2])
    assert judged[1] is None
    assert judged[0] is not None and math.isclose(judged[0], ((0.5 - 0.4) / 0.1 + 1.0) / 2)


def test_the_judge_auditor_over_the_sim_judge_scores_library_designs() -> None:
    judge = SimJudge(0)
    score = TrainingScore(
        ("aesthetic", "alignment", "preference"), (1, 1, 1), (0.0, 0.0, 0.0), (1, 1, 1), "none"
    )
    texts = library_texts(30)[:4]
    judged = JudgeAuditor(judge, score).judge(["a castle at dusk"] * 4, texts, [7, 7, 7, 7])
    assert all(j is not None and math.isfinite(j) for j in judged)
    again = JudgeAuditor(judge, score).judge(["a castle at dusk"] * 4, texts, [7, 7, 7, 7])
    assert again == judged  # a render seed fixes the judgement
