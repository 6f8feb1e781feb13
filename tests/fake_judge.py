"""A tiny outside judge for tests: what an evaluator or render farm would plug in.

Loaded as ``--judge fake_judge:make_judge`` (pytest puts ``tests/`` on sys.path; a
subprocess gets it through PYTHONPATH), so collection is tested without the simulator and
through the same ``module:factory`` door as any outside judge. Scores are a pure function of
(prompt, workflow JSON, seed), so a test can recompute every stored score and tell a
complete row from a damaged one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Any

from flowforge.judge import JudgeItem, JudgeResult


def expected_scores(prompt: str, workflow: dict[str, Any], seed: int) -> dict[str, float]:
    """The scores FakeJudge gives an item: two numbers in [0, 1) from a content hash."""
    text = json.dumps([prompt, workflow, seed], sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return {
        "quality": int.from_bytes(digest[:4], "big") / 2**32,
        "alignment": int.from_bytes(digest[4:8], "big") / 2**32,
    }


class FakeJudge:
    """Scores by content hash. Failure modes, all keyed by prompt text:

    - a prompt containing `broken` gets a permanent error (``invalid: ...``);
    - every item fails with ``transient: busy`` its first `transient` times;
    - the first `raises` calls to `score` raise ConnectionError;
    - `delay` seconds of sleep per call (so a subprocess can be killed mid-run).
    """

    def __init__(self, transient: int, raises: int, delay: float, broken: str) -> None:
        self.transient, self.raises, self.delay, self.broken = transient, raises, delay, broken
        self.calls = 0
        self.seen: Counter[str] = Counter()

    def object_info(self) -> dict[str, Any]:
        path = resources.files("flowforge").joinpath("resources", "comfyui", "object_info.json")
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.calls <= self.raises:
            raise ConnectionError(f"server unreachable (call {self.calls})")
        return [self._one(item) for item in items]

    def _one(self, item: JudgeItem) -> JudgeResult:
        if self.broken and self.broken in item.prompt:
            return JudgeResult(None, f"invalid: prompt contains {self.broken!r}")
        key = json.dumps([item.prompt, item.workflow, item.seed], sort_keys=True)
        self.seen[key] += 1
        if self.seen[key] <= self.transient:
            return JudgeResult(None, "transient: busy, try again")
        return JudgeResult(expected_scores(item.prompt, item.workflow, item.seed))


def make_judge(
    transient: str = "0", raises: str = "0", delay: str = "0", broken: str = ""
) -> FakeJudge:
    """The factory: options arrive as strings (``--judge-opt delay=0.01``), as documented."""
    return FakeJudge(int(transient), int(raises), float(delay), broken)


def make_not_a_judge() -> object:
    """A factory that returns something without ``score``: loading it must fail clearly."""
    return object()


def make_failing(**options: str) -> FakeJudge:
    """A factory that raises, as one given a bad option would."""
    raise RuntimeError(f"cannot connect with {options}")


def make_only_in_main(**options: str) -> FakeJudge:
    """A factory that works in the process that loads it first and raises in any spawned
    helper, so a test can make a helper fail while its caller goes on."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        raise RuntimeError("this judge cannot be built in a helper process")
    return make_judge(**options)
