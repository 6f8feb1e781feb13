"""Judges: what turns (prompt, workflow, seed) into scores. See `base.Judge`."""

from .base import Judge, JudgeItem, JudgeResult

__all__ = ["Judge", "JudgeItem", "JudgeResult"]
