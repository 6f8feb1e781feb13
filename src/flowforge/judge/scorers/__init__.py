"""Image scorers (aesthetic, ImageReward, HPS v2.1, PickScore, CLIP score) for real judges."""

from .base import COMBINED, ScorerError, ScorerSet, ScorerSetConfig, ScorerSpec

__all__ = ["COMBINED", "ScorerError", "ScorerSet", "ScorerSetConfig", "ScorerSpec"]
