"""Win rate and KL against hand-computed examples."""

import pytest
import torch

from tasks.evaluate import sequence_kl, win_rate


def test_win_rate_counts_ties_as_half():
    assert win_rate([1.0, 0.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.1]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    same = [0.3, -0.2, 0.9]
    assert win_rate(same, same) == 0.5


def test_sequence_kl_hand_computed_and_zero_for_identical_policies():
    lp = [torch.tensor([-1.0, -2.0]), torch.tensor([-0.5])]
    ref = [torch.tensor([-1.5, -2.5]), torch.tensor([-1.5])]
    assert sequence_kl(lp, ref) == pytest.approx((1.0 + 1.0) / 2)
    assert sequence_kl(lp, lp) == 0.0


from tasks.evaluate import choose_champion  # noqa: E402


def _m(win, kl):
    return {"win_rate_gold": win, "kl": kl}


def test_champion_gate_promotes_the_best_policy_under_the_kl_cap():
    res = {"sft": _m(0.5, 0.0), "ppo": _m(0.80, 7.0), "dpo": _m(0.62, 1.0), "rto": _m(0.70, 4.0)}
    best, why = choose_champion(res, max_kl=5.0, min_win_rate=0.55)
    assert best == "rto" and "70.0%" in why  # ppo wins more but its KL is over the cap
    assert choose_champion(res, max_kl=10.0, min_win_rate=0.55)[0] == "ppo"
    tie = {"a": _m(0.7, 3.0), "b": _m(0.7, 2.0)}
    assert choose_champion(tie, 5.0, 0.5)[0] == "b"  # equal win rate: the closer policy


def test_champion_gate_refuses_below_the_threshold_or_over_the_kl_cap():
    res = {"sft": _m(0.5, 0.0), "ppo": _m(0.52, 1.0), "dpo": _m(0.54, 2.0)}
    best, why = choose_champion(res, max_kl=5.0, min_win_rate=0.55)
    assert best is None and "dpo" in why and "below" in why
    best, why = choose_champion(res, max_kl=0.5, min_win_rate=0.0)
    assert best is None and "no policy has KL <= 0.5" in why
    assert choose_champion({"sft": _m(0.5, 0.0)}, 5.0, 0.0)[0] is None  # SFT itself is never a candidate


def test_frontier_points_come_from_every_experiment_and_skip_skipped_policies():
    from tasks.frontier import points

    def node(name, coef, metrics):
        return {
            "rev": name,
            "name": name,
            "data": {
                "params": {
                    "params.yaml": {
                        "data": {"ppo": {"kl": {"coef": coef}}, "dpo": {"beta": 0.1}, "rto": {"kl": {"coef": 0.01}}}
                    }
                },
                "metrics": {f"metrics/eval/{a}.json": {"data": m} for a, m in metrics.items()},
            },
        }

    ppo = lambda kl: {"kl": kl, "gold_reward": 0.1 * kl, "win_rate_gold": 0.5 + kl / 100}  # noqa: E731
    show = [
        node("workspace", 0.02, {"ppo": ppo(1.0), "dpo": {"skipped": 1}}),
        {
            "rev": "abc",
            "data": {"params": {}, "metrics": {}},
            "experiments": [
                {"revs": [node("frontier-a", 0.05, {"ppo": ppo(0.5)}), node("frontier-b", 0.01, {"ppo": ppo(2.0)})]}
            ],
        },
        node("ablation", 0.02, {"ppo": ppo(3.0)}),  # not a frontier-* experiment: not a point
        {**node("frontier-failed", 0.5, {"ppo": ppo(1.0)}), "error": {"msg": "Experiment run failed"}},
    ]
    pts = points(show)
    assert sorted((p["coef"], p["kl"]) for p in pts["ppo"]) == [(0.01, 2.0), (0.02, 1.0), (0.05, 0.5)]
    assert pts["dpo"] == [] and pts["rto"] == []
    assert {p["experiment"] for p in pts["ppo"]} == {"workspace", "frontier-a", "frontier-b"}
