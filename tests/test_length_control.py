"""The length-controlled win rate (tasks/eval/length_control.py) against hand-computed cases and simulated judges."""

import math

import numpy as np
import pytest

from tasks.eval import stats
from tasks.eval.length_control import fit, lc_interval, lc_win_rate, pair_differences, pair_outcomes


def logit(p):
    return math.log(p / (1 - p))


def test_equal_lengths_give_the_plain_win_rate():
    outcomes = np.array([[1.0, 0.0], [0.5, 1.0]])  # a tie counts ½: plain win rate 2.5 / 4
    lc = lc_win_rate(outcomes, np.zeros((2, 2)))
    assert lc["lc_win_rate"] == pytest.approx(0.625, abs=1e-9) and lc["phi"] == pytest.approx(0.0, abs=1e-9)


def test_two_length_groups_hand_computed():
    """Half the pairs at x = +1 won 80 % of the time, half at x = −1 won 40 %: the MLE solves θ + φ = logit 0.8
    and θ − φ = logit 0.4, so θ = (logit 0.8 + logit 0.4) / 2 and LC = σ(θ) = 0.6202."""
    x = np.array([[1.0] * 5 + [-1.0] * 5] * 4)
    y = np.array([[1, 1, 1, 1, 0, 1, 1, 0, 0, 0]] * 4, dtype=float)
    theta, phi = fit(y, x)
    assert theta == pytest.approx((logit(0.8) + logit(0.4)) / 2, abs=2e-3)
    assert phi == pytest.approx((logit(0.8) - logit(0.4)) / 2, abs=2e-3)


def simulated(theta, phi, n=600, m=4, longer=1.5, seed=0):
    """A judge with logit P(policy ≻ SFT) = θ + φ tanh(Δ/σ), the policy longer on average by `longer` σ."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(longer, 1.0, size=(n, m))
    p = 1 / (1 + np.exp(-(theta + phi * np.tanh(diff / diff.std()))))
    return (rng.random((n, m)) < p).astype(float), diff


def test_a_judge_that_prefers_only_length_gives_about_half():
    outcomes, diff = simulated(theta=0.0, phi=3.0)
    assert outcomes.mean() > 0.75  # the raw win rate rewards the longer policy
    assert lc_win_rate(outcomes, diff)["lc_win_rate"] == pytest.approx(0.5, abs=0.04)


def test_a_known_length_bias_is_recovered():
    outcomes, diff = simulated(theta=0.8, phi=1.5, seed=1)
    lc = lc_win_rate(outcomes, diff)
    assert lc["theta"] == pytest.approx(0.8, abs=0.15) and lc["phi"] == pytest.approx(1.5, abs=0.3)
    assert lc["lc_win_rate"] == pytest.approx(1 / (1 + math.exp(-0.8)), abs=0.04)


def test_the_interval_covers_the_point_and_pairs_are_built_like_the_win_rate():
    a, b = np.array([[3.0, 1.0], [2.0, 2.0]]), np.array([[2.0, 2.0], [1.0, 5.0]])
    outcomes = pair_outcomes(a, b)
    assert outcomes.mean(axis=1).tolist() == stats.pairwise_wins(a, b).tolist()
    assert pair_differences(a, b).tolist() == [[1.0, 1.0, -1.0, -1.0], [1.0, -3.0, 1.0, -3.0]]
    outcomes, diff = simulated(theta=0.4, phi=1.0, n=200, seed=2)
    iv = lc_interval(outcomes, diff, stats.bootstrap_indices(200, 300, seed=0), 0.95)
    assert iv["lo"] < iv["mean"] < iv["hi"] and 0 < iv["se"] < 0.05
