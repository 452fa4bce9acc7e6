"""Interval code against cases with known answers (tasks/eval/stats.py), and the head-to-head's pairing."""

import math

import numpy as np
import pytest

from tasks.eval import stats
from tasks.eval.evaluate import head_to_head


def test_bootstrap_se_of_a_bernoulli_mean_matches_the_analytic_one():
    # 200 prompts, 70 % wins: se = sqrt(p (1 - p) / n) = sqrt(0.7 * 0.3 / 200) = 0.0324
    x = np.array([1.0] * 140 + [0.0] * 60)
    iv = stats.interval(x, stats.bootstrap_indices(200, 4000, seed=0), 0.95)
    assert iv["mean"] == pytest.approx(0.7)
    assert iv["se"] == pytest.approx(math.sqrt(0.7 * 0.3 / 200), rel=0.05)
    # percentile interval ~ mean -+ 1.96 se
    assert iv["lo"] == pytest.approx(0.7 - 1.96 * 0.0324, abs=0.01) and iv["hi"] == pytest.approx(
        0.7 + 0.0635, abs=0.01
    )


def test_a_constant_sample_has_an_interval_of_zero_width():
    iv = stats.interval(np.full(50, 0.25), stats.bootstrap_indices(50, 500, seed=1), 0.95)
    assert iv == {"mean": 0.25, "se": 0.0, "lo": 0.25, "hi": 0.25}


def test_a_wider_level_gives_a_wider_interval():
    x = np.random.default_rng(0).normal(size=100)
    idx = stats.bootstrap_indices(100, 2000, seed=0)
    narrow, wide = stats.interval(x, idx, 0.5), stats.interval(x, idx, 0.99)
    assert wide["lo"] < narrow["lo"] < narrow["hi"] < wide["hi"]


def test_pairwise_wins_hand_computed_and_exactly_half_against_itself():
    a = np.array([[1.0, 0.0], [0.5, 0.5]])
    b = np.array([[0.5, 0.0], [0.5, 0.2]])
    # prompt 0: (1>.5, 1>0, 0<.5, 0=0) -> (1 + 1 + 0 + .5) / 4; prompt 1: (.5=.5, .5>.2) twice -> (.5 + 1) / 2
    assert stats.pairwise_wins(a, b) == pytest.approx([2.5 / 4, 0.75])
    same = np.random.default_rng(0).normal(size=(7, 3))
    assert (stats.pairwise_wins(same, same) == 0.5).all()


def test_outcome_counts_per_prompt():
    assert stats.outcome_counts(np.array([1.0, 0.75, 0.5, 0.25, 0.0])) == {"n_wins": 2, "n_draws": 1, "n_losses": 2}


def test_by_prompt_groups_samples_and_refuses_uneven_counts():
    assert stats.by_prompt([1, 2, 3, 4], [1, 0, 1, 0], 2).tolist() == [[2, 4], [1, 3]]
    with pytest.raises(ValueError, match="same number of samples"):
        stats.by_prompt([1, 2, 3], [0, 0, 1], 2)


def test_pairing_makes_identical_policies_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 2))
    other = g + rng.normal(scale=0.01, size=g.shape) + 0.5  # a policy clearly better on every prompt
    h2h = head_to_head({"sft": g, "a": g, "b": g.copy(), "c": other}, stats.bootstrap_indices(40, 500, 0), 0.95)
    same = h2h["a_vs_b"]
    assert same["gold_reward_diff"] == 0 and same["gold_reward_diff_ci_low"] == same["gold_reward_diff_ci_high"] == 0
    assert same["win_rate_gold"] == 0.5 and same["significant"] == 0
    assert h2h["a_vs_c"]["significant"] == 1 and h2h["a_vs_c"]["gold_reward_diff_ci_high"] < 0
    assert set(h2h) == {"a_vs_b", "a_vs_c", "b_vs_c"}  # SFT is not a head-to-head party


def test_t_interval_over_seeds_hand_computed():
    # x = 1, 2, 3: mean 2, s = 1, se = 1/sqrt(3); t_{0.975, 2} = 4.3027
    iv = stats.t_interval([1.0, 2.0, 3.0], 0.95)
    assert iv["mean"] == 2 and iv["se"] == pytest.approx(1 / math.sqrt(3))
    assert iv["hi"] - 2 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4) and iv["lo"] == pytest.approx(4 - iv["hi"])
    assert stats.t_interval([0.7], 0.95)["lo"] is None  # one seed: no interval


def test_overlap():
    assert stats.overlap((0.1, 0.3), (0.3, 0.5)) and not stats.overlap((0.1, 0.29), (0.3, 0.5))


def test_a_fitted_line_read_at_one_x_against_hand_computed_values():
    """x (1, 2, 3), y (1, 3, 2): x̄ 2, Sxx 2, slope 0.5, intercept 1, residuals (−0.5, 1, −0.5), s² = 1.5/1;
    at x0 = 2.25: ŷ 2.125, se = √1.5 · √(1/3 + 0.0625/2) = 0.739510, t_{0.975,1} = 12.7062."""
    from tasks.eval.stats import difference_of_fits, line_at

    a = line_at([1, 2, 3], [1, 3, 2], 2.25, 0.95)
    assert a["mean"] == pytest.approx(2.125) and a["slope"] == pytest.approx(0.5) and a["dof"] == 1
    assert a["se"] == pytest.approx(0.739510, rel=1e-5)
    assert a["hi"] - a["mean"] == pytest.approx(12.7062 * 0.739510, rel=1e-4)
    b = line_at([1.5, 2.5, 3.5], [0.0, 0.5, 1.0], 2.25, 0.95)  # on a line: no residual, no width
    assert b["mean"] == pytest.approx(0.375) and b["se"] == pytest.approx(0.0, abs=1e-12)
    d = difference_of_fits(a, b, 0.95)  # one side without variance: ν is the other's, 1
    assert d["diff"] == pytest.approx(1.75) and d["dof"] == pytest.approx(1.0)
    assert d["lo"] == pytest.approx(1.75 - 12.7062 * 0.739510, rel=1e-4) and not d["significant"]
    tight = difference_of_fits({**a, "se": 0.1, "dof": 6}, {**b, "se": 0.1, "dof": 6}, 0.95)
    assert tight["dof"] == pytest.approx(12.0) and tight["significant"]  # (2·0.01)² / (2·0.0001/6) = 12


def test_share_difference_hand_computed_with_given_resamples():
    # a gets 2, 1, 0 of each prompt's 2 pairs right, b 1 of each: Δ = (3 - 3) / 6 = 0. Over the 4 given
    # resamples of prompts, Δ* = (6-3)/6, (1-3)/6, (3-3)/6, (5-3)/6 = 12, -8, 0, 8 (in 24ths): mean 3/24,
    # squared deviations 81 + 121 + 9 + 25 = 236, se = √(236/3)/24; 25 %/75 % quantiles (linear) -1/12, 3/8.
    indices = np.array([[0, 0, 0], [1, 2, 2], [0, 1, 2], [0, 0, 1]])
    d = stats.share_difference([2, 1, 0], [1, 1, 1], [2, 2, 2], indices, level=0.5)
    assert d["diff"] == 0.0 and d["n_prompts"] == 3
    assert d["se"] == pytest.approx(math.sqrt(236 / 3) / 24)
    assert (d["lo"], d["hi"]) == (pytest.approx(-1 / 12), pytest.approx(3 / 8))
    assert not d["significant"]


def test_share_difference_of_a_model_with_itself_is_zero_and_a_clear_gain_is_significant():
    rng = np.random.default_rng(0)
    totals = np.full(40, 15)
    b = rng.binomial(15, 0.6, size=40)
    indices = stats.bootstrap_indices(40, 500, seed=1)
    same = stats.share_difference(b, b, totals, indices, 0.95)
    assert (same["diff"], same["lo"], same["hi"], same["significant"]) == (0.0, 0.0, 0.0, False)
    better = stats.share_difference(np.minimum(b + 4, 15), b, totals, indices, 0.95)
    assert better["lo"] > 0 and better["significant"]
