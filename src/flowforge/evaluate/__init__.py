"""Evaluation: designers compared on held-out prompts through a Judge (issue 6)."""
