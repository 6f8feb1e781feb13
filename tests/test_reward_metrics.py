"""The reward ensemble's maths against values computed by hand."""

from __future__ import annotations

import math

import pytest

from flowforge.reward.config import RewardConfig
from flowforge.reward.metrics import (
    average_ranks,
    error_by_spread,
    member_stats,
    pairwise_counts,
    penalized_reward,
    spearman,
    top1_regret,
    within_prompt,
)
from flowforge.reward.target import TrainingScore, TrainingScoreError, fit_training_score, transform


def test_reward_is_mean_minus_kappa_times_population_std() -> None:
    mean, std = member_stats([[1.0, 3.0], [2.0, 2.0], [0.0, 6.0]])
    assert mean.tolist() == [2.0, 2.0, 3.0]
    assert std.tolist() == [1.0, 0.0, 3.0]  # ddof 0: sqrt(((1-2)^2 + (3-2)^2) / 2) = 1
    assert penalized_reward(mean, std, 0.0).tolist() == [2.0, 2.0, 3.0]
    assert penalized_reward(mean, std, 2.0).tolist() == [0.0, 2.0, -3.0]


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10, 20, 20]).tolist() == [1.0, 2.5, 2.5]
    assert average_ranks([3, 1, 2]).tolist() == [3.0, 1.0, 2.0]
    assert average_ranks([5, 5, 5, 5]).tolist() == [2.5, 2.5, 2.5, 2.5]


def test_spearman_against_hand_computed_values() -> None:
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) with d = [0, 1, 1, 0]: 1 - 12 / 60
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]; centred [-1.5, 0, 0, 1.5], [-1.5, -.5, .5, 1.5]
    # cov 4.5, norms^2 4.5 and 5: 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2], [1, 2, 3])


def test_pairwise_accuracy_counts_predicted_ties_as_half() -> None:
    # pairs (0,1) right, (0,2) right, (1,2) wrong
    assert pairwise_counts([1, 2, 3], [1, 3, 2]) == (2.0, 3)
    # (0,1) predicted tie: one half
    assert pairwise_counts([1, 1, 2], [1, 2, 3]) == (2.5, 3)
    # actual ties are not pairs to get right
    assert pairwise_counts([3, 2, 1], [1, 1, 2]) == (0.0, 2)


def test_top1_regret_is_the_quality_lost_by_trusting_the_model() -> None:
    assert top1_regret([0.1, 0.9, 0.5], [3.0, 1.0, 2.0]) == pytest.approx(2.0)
    assert top1_regret([0.9, 0.1, 0.5], [3.0, 1.0, 2.0]) == 0.0
    # predicted tie between designs of actual 2 and 4: their mean 3, best 4
    assert top1_regret([1.0, 1.0, 0.0], [2.0, 4.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        top1_regret([], [])


def test_within_prompt_aggregates_over_prompts() -> None:
    predicted = [1.0, 2.0, 3.0, 2.0, 1.0, 5.0]
    actual = [1.0, 3.0, 2.0, 1.0, 2.0, 9.0]
    groups = [[0, 1, 2], [3, 4], [5]]  # the single design of the last prompt counts nowhere
    got = within_prompt(groups, predicted, actual)
    # prompt A: rho([1,2,3],[1,3,2]) = 0.5, 2 of 3 pairs, regret 3 - 2 = 1, random 3 - 2 = 1
    # prompt B: 2 designs (no rho), pair wrong, regret 2 - 1 = 1, random 2 - 1.5 = 0.5
    assert got.spearman == pytest.approx(0.5)
    assert got.pairwise_accuracy == pytest.approx(2 / 4)
    assert got.top1_regret == pytest.approx(1.0)
    assert got.random_regret == pytest.approx(0.75)
    assert (got.prompts, got.pairs) == (2, 4)


def test_error_by_spread_bins_by_std_quantile() -> None:
    bins = error_by_spread([0.1, 0.4, 0.2, 0.3], [-1.0, 4.0, 2.0, -3.0], bins=2)
    assert [b.count for b in bins] == [2, 2]
    assert bins[0].mean_std == pytest.approx(0.15) and bins[0].mean_error == pytest.approx(1.5)
    assert bins[1].mean_std == pytest.approx(0.35) and bins[1].mean_error == pytest.approx(3.5)
    assert (bins[0].low, bins[1].high) == (0.1, 0.4)


def test_training_score_is_the_weighted_mean_of_standardized_scorers() -> None:
    score = TrainingScore(("a", "b"), (1.0, 3.0), (0.5, 1.0), (0.5, 2.0), "none")
    # (1 * (1 - 0.5) / 0.5 + 3 * (3 - 1) / 2) / 4 = (1 + 3) / 4
    assert score({"a": 1.0, "b": 3.0, "held": 9.0}) == pytest.approx(1.0)
    assert transform(0.5, "logit") == pytest.approx(0.0)
    assert transform(0.75, "logit") == pytest.approx(math.log(3.0))
    assert transform(1.0, "logit") == pytest.approx(math.log((1 - 1e-4) / 1e-4))
    assert transform(0.3, "none") == 0.3


def test_fitted_training_score_uses_population_statistics_and_skips_the_heldout_scorer() -> None:
    rows = [
        {"x": 1.0, "y": 0.0, "heldout_preference": 5.0},
        {"x": 3.0, "y": 4.0, "heldout_preference": 6.0},
    ]
    score = fit_training_score(rows, RewardConfig())
    assert score.names == ("x", "y")
    assert score.means == (2.0, 2.0) and score.stds == (1.0, 2.0)
    assert [score(row) for row in rows] == [pytest.approx(-1.0), pytest.approx(1.0)]
    weighted = fit_training_score(rows, RewardConfig(score_weights=(("y", 2.0),)))
    assert weighted.names == ("y",) and weighted(rows[1]) == pytest.approx(1.0)
    with pytest.raises(TrainingScoreError, match="constant"):
        fit_training_score([{"x": 1.0}, {"x": 1.0}], RewardConfig())
    with pytest.raises(TrainingScoreError, match="not in every scored triplet"):
        fit_training_score(rows, RewardConfig(score_weights=(("z", 1.0),)))
    probabilities = [{"x": 0.25, "y": 0.5}, {"x": 0.75, "y": 0.9}]
    logit = fit_training_score(probabilities, RewardConfig(score_transform="logit"))
    assert logit.means[0] == pytest.approx(0.0) and logit.stds[0] == pytest.approx(math.log(3.0))
