"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from flowforge.evaluate.metrics import (
    cosine,
    distinct,
    nearest_similarity,
    paired_difference,
    share_not_in,
    text_bag,
    wilson_interval,
    win_interval,
    win_rate,
)

A = "1 CheckpointLoaderSimple ckpt_name=a.safetensors\n2 KSampler cfg=7.0 steps=20 model=@1.0"
B = "1 CheckpointLoaderSimple ckpt_name=a.safetensors\n2 KSampler cfg=5.0 steps=20 model=@1.0"


def test_win_rate_counts_ties_as_half() -> None:
    assert win_rate([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]) == pytest.approx(2.5 / 4)
    assert win_rate([0.3] * 5, [0.3] * 5) == 0.5
    with pytest.raises(ValueError, match="paired"):
        win_rate([1.0], [1.0, 2.0])


def test_wilson_interval_matches_published_values() -> None:
    """Wilson's 95% score interval: 5 of 10 is (0.2366, 0.7634); it stays inside [0, 1] at
    the ends, where the plain normal interval would leave it."""
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    assert wilson_interval(207, 300) == pytest.approx((0.6355, 0.7397), abs=5e-5)
    with pytest.raises(ValueError, match="between 0 and 300"):
        wilson_interval(301, 300)


def test_win_interval_counts_ties_as_half_like_the_win_rate() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0] * 5, [0.0, 2.0, 5.0, 1.0] * 5  # 2.5 wins of 4, five times
    low, high = win_interval(a, b)
    assert (low, high) == wilson_interval(12.5, 20)
    assert low < win_rate(a, b) < high


def test_paired_difference_is_the_mean_with_a_normal_interval() -> None:
    """Differences 1, 2, 3, 4: mean 2.5, sample sd 1.2910, standard error 0.6455, so the
    95% interval is 2.5 -/+ 1.96 x 0.6455."""
    mean, low, high = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert mean == pytest.approx(2.5)
    assert (low, high) == pytest.approx((2.5 - 1.2652, 2.5 + 1.2652), abs=1e-4)
    assert paired_difference([0.3, 0.7], [0.3, 0.7]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="two or more"):
        paired_difference([1.0], [0.0])


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
