"""The Bradley–Terry rating on the Elo scale (tasks/eval/rating.py) against hand-computed values."""

import math

import numpy as np
import pytest

from tasks.eval import stats
from tasks.eval.rating import ANCHOR_ELO, bradley_terry, expected_win_rate, rating, to_elo


def test_two_players_three_to_one_are_400_log10_3_apart():
    theta = bradley_terry(np.array([[0.0, 75.0], [25.0, 0.0]]))
    elo = to_elo(theta, anchor=1)
    assert elo[1] == ANCHOR_ELO
    assert elo[0] - elo[1] == pytest.approx(400 * math.log10(3), abs=1e-6)  # 190.85


def test_known_ratings_are_recovered_from_their_expected_wins():
    true = np.array([1000.0, 1100.0, 1250.0])
    p = 1 / (1 + 10 ** ((true[None, :] - true[:, None]) / 400))  # P(a beats b)
    elo = to_elo(bradley_terry(1000 * p), anchor=0)
    np.testing.assert_allclose(elo, true, atol=1e-6)
    assert expected_win_rate(1100.0, 1000.0) == pytest.approx(1 / (1 + 10**-0.25))  # 0.640


def test_draws_only_give_equal_ratings_and_no_wins_needs_the_prior():
    draws = np.full((3, 3), 5.0)
    np.testing.assert_allclose(to_elo(bradley_terry(draws), 0), ANCHOR_ELO, atol=1e-9)
    shutout = np.array([[0.0, 10.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="no win or draw"):
        bradley_terry(shutout)
    # 10 games won plus one pseudo-game drawn: 10.5 to 0.5, odds 21
    assert to_elo(bradley_terry(shutout, prior=1.0), 1)[0] == pytest.approx(ANCHOR_ELO + 400 * math.log10(21))


def test_resamples_fit_independently():
    rng = np.random.default_rng(0)
    w = rng.uniform(1, 10, size=(4, 3, 3))
    together = bradley_terry(w)
    for i in range(4):
        np.testing.assert_allclose(together[i], bradley_terry(w[i]), atol=1e-8)


def test_rating_of_policies_anchored_on_sft_with_bootstrap_intervals():
    n = 10
    sft = np.zeros((n, 2))
    better = np.ones((n, 2))  # beats every SFT sample on every prompt
    same = np.zeros((n, 2))  # ties SFT everywhere
    indices = stats.bootstrap_indices(n, 200, seed=0)
    r = rating({"sft": sft, "better": better, "same": same}, indices, 0.95, prior=1.0)
    assert r["sft"] == {"elo": ANCHOR_ELO, "elo_se": 0.0, "elo_ci_low": ANCHOR_ELO, "elo_ci_high": ANCHOR_ELO}
    assert r["same"]["elo"] == pytest.approx(ANCHOR_ELO)
    # better vs sft and vs same: 10.5 to 0.5 each; sft vs same 5.5 to 5.5 -> better/sft odds 21
    assert r["better"]["elo"] == pytest.approx(ANCHOR_ELO + 400 * math.log10(21), abs=1e-6)
    # the same outcome on every prompt: every resample gives the same rating
    assert r["better"]["elo_ci_low"] == pytest.approx(r["better"]["elo_ci_high"])
    mixed = np.where(np.arange(n)[:, None] < 7, 1.0, -1.0) * np.ones((n, 2))  # wins 7 prompts of 10
    r = rating({"sft": sft, "mixed": mixed}, indices, 0.95, prior=1.0)  # 7.5 to 3.5
    assert r["mixed"]["elo"] == pytest.approx(ANCHOR_ELO + 400 * math.log10(7.5 / 3.5), abs=1e-6)
    assert r["mixed"]["elo_ci_low"] < r["mixed"]["elo"] < r["mixed"]["elo_ci_high"] and r["mixed"]["elo_se"] > 0
    with pytest.raises(ValueError, match="anchor"):
        rating({"a": sft, "b": better}, indices, 0.95)
