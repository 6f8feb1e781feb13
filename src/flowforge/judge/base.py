"""The Judge contract: the only way anything in flowforge learns about image quality.

A judge takes a batch of (prompt, workflow, seed) and returns named scores per item, as if
each workflow had been rendered with that seed and the image scored by preference models.
Collection and evaluation talk to judges only through this contract, so a real render farm,
the embedded simulator and an outside evaluator are interchangeable, and no training stage
can peek at a simulator's hidden parameters.

Names and fields are exactly those of design.md (a contract outside code relies on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge. `workflow` is ComfyUI API JSON with the prompt already written in."""

    prompt: str
    workflow: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class JudgeResult:
    """Scores by scorer name, or an error (a failed render / invalid workflow), never both."""

    scores: dict[str, float] | None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.scores is None) == (self.error is None):
            raise ValueError("a JudgeResult has either scores or an error, not both or neither")


@runtime_checkable
class Judge(Protocol):
    """Anything that scores (prompt, workflow, seed) items. See module docstring."""

    def object_info(self) -> dict[str, Any]:
        """ComfyUI /object_info JSON: the node schemas and the model files available."""
        ...

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        """One result per item, same order. A failed render is a result with error set."""
        ...
