"""Validation of a workflow against node schemas: every problem, never a repair.

Problems use ComfyUI's own error type names where ComfyUI has one (``value_not_in_list``,
``return_type_mismatch``, ``required_input_missing``, ...), so a report reads like the
server's answer, and name the node id, class, input, what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one node (or the whole graph when `node_id` is None)."""

    kind: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    input: str | None = None
    expected: str | None = None
    found: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "workflow"
        if self.input:
            where += f" input {self.input!r}"
        detail = ""
        if self.expected is not None or self.found is not None:
            detail = f": expected {self.expected}, found {self.found}"
        return f"{self.severity} {self.kind} at {where}: {self.message}{detail}"


@dataclass(frozen=True)
class ValidationReport:
    """All problems found; valid when there is no error (warnings do not fail a workflow)."""

    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")
