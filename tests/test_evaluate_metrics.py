"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from flowforge.evaluate.metrics import (
    cosine,
    distinct,
    nearest_similarity,
    share_not_in,
    text_bag,
    win_rate,
)

A = "1 CheckpointLoaderSimple ckpt_name=a.safetensors\n2 KSampler cfg=7.0 steps=20 model=@1.0"
B = "1 CheckpointLoaderSimple ckpt_name=a.safetensors\n2 KSampler cfg=5.0 steps=20 model=@1.0"


def test_win_rate_counts_ties_as_half() -> None:
    assert win_rate([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]) == pytest.approx(2.5 / 4)
    assert win_rate([0.3] * 5, [0.3] * 5) == 0.5
    with pytest.raises(ValueError, match="paired"):
        win_rate([1.0], [1.0, 2.0])


def test_distinct_and_share_not_in_library() -> None:
    assert distinct(["a", "b", "a", "c"]) == 3
    assert share_not_in(["a", "x", "y", "a"], {"a", "b"}) == 0.5


def test_text_bag_pieces_name_class_and_setting() -> None:
    bag = text_bag(A)
    assert bag["KSampler"] == 1 and bag["KSampler.cfg=7.0"] == 1
    assert bag["CheckpointLoaderSimple.ckpt_name=a.safetensors"] == 1
    assert sum(bag.values()) == 6


def test_cosine_of_designs_differing_in_one_setting() -> None:
    # A and B share 5 of their 6 pieces, each counted once: cos = 5 / (sqrt 6 * sqrt 6).
    assert cosine(text_bag(A), text_bag(B)) == pytest.approx(5 / 6)
    assert cosine(text_bag(A), text_bag(A)) == pytest.approx(1.0)
    assert cosine(text_bag(A), text_bag("")) == 0.0


def test_nearest_similarity_takes_the_best_library_match() -> None:
    other = "1 EmptyLatentImage width=512"
    assert nearest_similarity([A, B], [A, other]) == pytest.approx((1.0 + 5 / 6) / 2)
    assert math.isclose(nearest_similarity([other], [A, B]), 0.0)
