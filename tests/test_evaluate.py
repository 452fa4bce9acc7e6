"""Sequence KL against hand-computed examples; the champion gate with intervals and an incumbent; the
frontier's points from `dvc exp show` output."""

import pytest
import torch

from tasks.eval.champion import champion_gate, choose_champion, run_standing
from tasks.eval.evaluate import sequence_kls


def test_sequence_kl_hand_computed_and_zero_for_identical_policies():
    lp = [torch.tensor([-1.0, -2.0]), torch.tensor([-0.5])]
    ref = [torch.tensor([-1.5, -2.5]), torch.tensor([-1.5])]
    assert sequence_kls(lp, ref) == pytest.approx([1.0, 1.0])
    assert sequence_kls(lp, lp) == [0.0, 0.0]


def _m(win, kl, half=0.03):
    return {"win_rate": win, "win_rate_ci_low": win - half, "win_rate_ci_high": win + half, "kl": kl}


def test_a_clear_winner_under_the_kl_cap_is_promoted():
    res = {"sft": _m(0.5, 0.0, 0), "ppo": _m(0.80, 7.0), "dpo": _m(0.62, 1.0), "rto": _m(0.72, 4.0)}
    best, why = choose_champion(res, max_kl=5.0, min_win_rate=0.55)
    assert best == "rto" and "72.0% [69.0%, 75.0%]" in why  # ppo wins more but its KL is over the cap
    assert "not significantly" not in why  # dpo's interval [59 %, 65 %] is below rto's
    assert choose_champion(res, max_kl=10.0, min_win_rate=0.55)[0] == "ppo"
    tie = {"a": _m(0.7, 3.0), "b": _m(0.7, 2.0)}
    best, why = choose_champion(tie, 5.0, 0.5)
    assert best == "b" and "not significantly better than a" in why  # equal win rate: the closer policy


def test_the_lower_end_of_the_interval_must_clear_the_bar():
    res = {"sft": _m(0.5, 0.0, 0), "ppo": _m(0.60, 1.0, half=0.08), "dpo": _m(0.58, 2.0, half=0.02)}
    best, why = choose_champion(res, max_kl=5.0, min_win_rate=0.55)
    assert best == "dpo"  # ppo's point estimate is higher, but its interval reaches down to 52 %
    best, why = choose_champion(res, max_kl=5.0, min_win_rate=0.57)
    assert best is None and "clears 57.0%" in why and "dpo" in why
    best, why = choose_champion(res, max_kl=0.5, min_win_rate=0.0)
    assert best is None and "no policy has KL <= 0.5" in why
    assert choose_champion({"sft": _m(0.5, 0.0)}, 5.0, 0.0)[0] is None  # SFT itself is never a candidate


def test_overlapping_the_incumbent_keeps_it_and_a_clear_gain_replaces_it():
    res = {"sft": _m(0.5, 0.0, 0), "ppo": _m(0.70, 2.0), "dpo": _m(0.66, 3.0)}
    incumbent = {"version": "3", "policy": "dpo", **_m(0.68, 3.0)}
    best, why = choose_champion(res, 5.0, 0.55, incumbent)
    assert best is None and "incumbent stays" in why and "dpo version 3: 68.0% [65.0%, 71.0%]" in why
    weak = {"version": "3", "policy": "dpo", **_m(0.60, 3.0)}
    best, why = choose_champion(res, 5.0, 0.55, weak)
    assert best == "ppo" and "is beaten" in why
    assert choose_champion(res, 5.0, 0.55, {"version": "3"})[0] == "ppo"  # no recorded interval: no evidence


def test_a_run_stands_on_its_own_rounds_not_on_the_registry():
    from types import SimpleNamespace

    cfg = SimpleNamespace(max_kl=5.0, min_win_rate=0.55, min_judge_agreement=0.5)
    round1 = {"sft": _m(0.5, 0.0, 0), "ppo": _m(0.63, 2.0), "rto": _m(0.64, 2.1), "dpo": _m(0.79, 6.2)}
    first, _ = run_standing(round1, 1, None, cfg, "gold")  # whatever alias the registry holds: rto, under the cap
    assert first == {"standing_policy": "rto", "standing_round": 1}
    before = {"policy": "rto", "round": 1, **round1["rto"]}
    round2 = {"sft": _m(0.5, 0.0, 0), "ppo": _m(0.66, 1.8), "rto": _m(0.60, 1.7), "dpo": _m(0.80, 7.0)}
    kept, why = run_standing(round2, 2, before, cfg, "gold")  # ppo r2's [63, 69] overlaps rto r1's [61, 67]
    assert kept == {"standing_policy": "rto", "standing_round": 1} and "rto r1" in why
    clear = {**round2, "ppo": _m(0.75, 1.8)}
    assert run_standing(clear, 2, before, cfg, "gold")[0] == {"standing_policy": "ppo", "standing_round": 2}
    none, why = run_standing({"sft": _m(0.5, 0.0, 0), "ppo": _m(0.52, 1.0)}, 1, None, cfg, "gold")
    assert none == {} and "SFT samples" in why
    doubt = {"label_agreement_gold": 0.5, "label_agreement_gold_ci_low": 0.4, "label_agreement_gold_ci_high": 0.6}
    untrusted, why = run_standing(clear, 2, before, cfg, "gold", doubt)  # a judge no better than chance: no move
    assert untrusted["standing_policy"] == "rto" and "agrees with the held-out labels" in why


class Registry:
    """An in-memory stand-in for the MLflow registry (the real one runs in tests/test_pipeline.py)."""

    def __init__(self, held=None):
        self.held, self.promoted = held, []

    def promote(self, name, version, alias, tags):
        self.promoted.append(version)
        self.held = (version, tags | {"stage": "?"})

    def alias_tags(self, name, alias):
        return self.held


class Gate:
    max_kl, min_win_rate, alias, min_judge_agreement = 5.0, 0.55, "champion", 0.5


def test_the_gate_moves_the_alias_only_on_clear_evidence():
    infos = {
        "ppo": {"registered_model": "rlhf-policy", "version": 4},
        "dpo": {"registered_model": "rlhf-policy", "version": 5},
    }
    res = {"sft": _m(0.5, 0.0, 0), "ppo": _m(0.70, 2.0), "dpo": _m(0.66, 3.0)}
    reg = Registry()
    first = champion_gate(res, infos, Gate, "rlhf-policy", reg)
    assert first["promoted"] == 1 and first["policy"] == "ppo" and reg.promoted == ["4"]
    assert float(reg.held[1]["eval_win_rate_ci_low"]) == pytest.approx(0.67) and reg.held[1]["champion_judge"] == "gold"
    # a second run (new versions), dpo now best by a little: overlaps the incumbent -> nothing moves
    infos2 = {
        "ppo": {"registered_model": "rlhf-policy", "version": 6},
        "dpo": {"registered_model": "rlhf-policy", "version": 7},
    }
    second = champion_gate(
        {"sft": res["sft"], "ppo": _m(0.69, 2.0), "dpo": _m(0.71, 3.0)}, infos2, Gate, "rlhf-policy", reg
    )
    assert second["promoted"] == 0 and "champion stays on version 4" in second["reason"] and reg.promoted == ["4"]
    # nothing clears the bar: nothing moves
    third = champion_gate({"sft": res["sft"], "ppo": _m(0.53, 2.0)}, infos2, Gate, "rlhf-policy", reg)
    assert third["promoted"] == 0 and reg.promoted == ["4"]
    # the same numbers from another judge: the incumbent's (gold's) interval is not compared with heldout_rm's
    fourth = champion_gate(
        {"sft": res["sft"], "ppo": _m(0.69, 2.0), "dpo": _m(0.71, 3.0)}, infos2, Gate, "rlhf-policy", reg, "heldout_rm"
    )
    assert fourth["promoted"] == 1 and fourth["policy"] == "dpo" and fourth["judge"] == "heldout_rm"
    assert "judged by gold, not heldout_rm: not compared" in fourth["reason"]


def test_frontier_points_come_from_every_experiment_and_skip_skipped_policies():
    from tasks.eval.frontier import points, runs

    def node(name, coef, metrics):
        return {
            "rev": name,
            "name": name,
            "data": {
                "params": {
                    "params.yaml": {
                        "data": {"ppo": {"kl": {"coef": coef}}, "dpo": {"kl_coef": 0.1}, "rto": {"kl": {"coef": 0.01}}}
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
                {
                    "revs": [
                        node("frontier-x-0-s0", 0.05, {"ppo": ppo(0.5)}),
                        node("frontier-x-0-s1", 0.05, {"ppo": ppo(0.7)}),  # same coefficient, another seed
                        node("frontier-x-1-s0", 0.01, {"ppo": ppo(2.0)}),
                    ]
                }
            ],
        },
        node("ablation", 0.02, {"ppo": ppo(3.0)}),  # not a frontier-* experiment: not a point
        {**node("frontier-failed", 0.5, {"ppo": ppo(1.0)}), "error": {"msg": "Experiment run failed"}},
    ]
    pts = points(runs(show))
    assert [(p["coef"], p["n_seeds"]) for p in pts["ppo"]] == [(0.05, 2), (0.02, 1), (0.01, 1)]  # sorted by KL
    assert pts["dpo"] == [] and pts["rto"] == []
    assert {p["experiments"] for p in pts["ppo"]} == {"workspace", "frontier-x-0-s0 frontier-x-0-s1", "frontier-x-1-s0"}
    two = pts["ppo"][0]  # mean of 0.5 and 0.7; t_{0.975,1} = 12.706, se = 0.1
    assert two["kl"] == pytest.approx(0.6) and two["kl_ci_high"] == pytest.approx(0.6 + 12.706 * 0.1, rel=1e-4)
    one = pts["ppo"][1]  # one seed, metrics without intervals: a zero-width bar at the point
    assert one["kl_ci_low"] == one["kl"] == one["kl_ci_high"] == 1.0


def test_welch_interval_matches_hand_computed_values():
    from tasks.eval.dvc_experiments import differences, welch_interval

    # a = 1,2,3; b = 4,5,6: s² = 1 each, se = √(1/3 + 1/3) = 0.8165, ν = (2/3)² / (2 · (1/3)² / 2) = 4,
    # t_{0.975,4} = 2.7764: −3 ± 2.2670
    d = welch_interval([1, 2, 3], [4, 5, 6], 0.95)
    assert d["diff"] == -3 and d["se"] == pytest.approx(0.81650, rel=1e-4)
    assert (d["lo"], d["hi"]) == pytest.approx((-5.2670, -0.7330), rel=1e-4) and d["significant"]
    # unequal spread: a = 0, 2 (s² = 2), b = 1, 1, 1 (s² = 0): se = 1, ν = 1, t_{0.975,1} = 12.706
    d = welch_interval([0, 2], [1, 1, 1], 0.95)
    assert d["diff"] == 0 and (d["lo"], d["hi"]) == pytest.approx((-12.706, 12.706), rel=1e-4)
    assert not d["significant"] and welch_interval([1.0], [2.0, 3.0], 0.95) is None
    runs = {
        a: [{"win_rate_gold": w, "gold_reward": w, "kl": w, "rm_score": w} for w in ws]
        for a, ws in {"ppo": [1, 2, 3], "dpo": [4, 5, 6], "rto": [7]}.items()
    }
    assert list(differences(runs, 0.95)) == ["ppo_vs_dpo"]  # rto has one seed: no interval


def test_seed_runs_take_the_newest_batch_and_aggregate_over_seeds():
    from tasks.eval.dvc_experiments import aggregate, latest_batch, seed_champions, seed_runs

    def node(name, win):
        m = {"kl": 1.0 + win, "gold_reward": win / 2, "win_rate_gold": win, "rm_score": 0.0}
        gate = {"promoted": int(win > 0.65), "reason": f"gate {win}"} | ({"policy": "dpo"} if win > 0.65 else {})
        metrics = {"metrics/eval/dpo.json": {"data": m}, "metrics/champion.json": {"data": gate}}
        return {"rev": name, "name": name, "data": {"params": {}, "metrics": metrics}}

    show = [
        node("workspace", 0.9),
        node("seeds-20261201-100000-s0", 0.1),  # an older batch
        node("seeds-20261203-090000-s0", 0.6),
        node("seeds-20261203-090000-s1", 0.7),
        node("seeds-20261203-090000-s2", 0.8),
        {**node("seeds-20261203-090000-s3", 0.2), "error": {"msg": "failed"}},
        # still running: DVC lists it with its temporary workspace's (the baseline's) metrics
        {
            "revs": [node("seeds-20261203-090000-s4", 0.99)],
            "executor": {"state": "running"},
            "name": "seeds-20261203-090000-s4",
        },
        {
            "revs": [node("seeds-20261203-090000-s5", 0.99)],
            "executor": {"state": "queued"},
            "name": "seeds-20261203-090000-s5",
        },
    ]
    batch = latest_batch(show)
    assert batch == "seeds-20261203-090000"
    runs = seed_runs(show, batch)
    assert list(runs) == ["dpo"] and [r["seed"] for r in runs["dpo"]] == [0, 1, 2]
    champions = seed_champions(show, batch)
    assert [(c["seed"], c["promoted"], c["policy"]) for c in champions] == [(0, 0, None), (1, 1, "dpo"), (2, 1, "dpo")]
    assert champions[1]["reason"] == "gate 0.7" and champions[1]["experiment"] == "seeds-20261203-090000-s1"
    win = aggregate(runs, 0.95)["dpo"]["win_rate_gold"]
    assert (
        win["mean"] == pytest.approx(0.7)
        and win["n"] == 3
        and win["lo"] == pytest.approx(0.7 - 4.3027 * 0.1 / 3**0.5, rel=1e-4)
    )


def test_dvc_queue_workers_are_alive_only_while_a_pid_file_names_a_live_process(tmp_path, monkeypatch):
    """The queue watchdog (flows/experiments.py) requeues only when every worker pid file names a dead process."""
    import os
    import subprocess
    import sys

    from flows import experiments

    monkeypatch.setattr(experiments, "ROOT", tmp_path)
    assert experiments.workers_alive()  # no pid file: it cannot tell, so it does not act
    celery = tmp_path / ".dvc/tmp/exps/celery"
    celery.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (celery / "dvc-exp-worker-1.pid").write_text(f"{dead.pid}\n")
    assert not experiments.workers_alive()
    (celery / "dvc-exp-worker-2.pid").write_text(f"{os.getpid()}\n")
    assert experiments.workers_alive()


def test_a_later_rounds_policies_are_runs_of_their_own_and_their_gain_has_a_welch_interval():
    from tasks.eval.dvc_experiments import round_gains, seed_runs, welch_interval

    def node(seed, r1, r2):
        metrics = {
            "metrics/eval/ppo.json": {"data": {"kl": 1.0, "win_rate_gold": r1}},
            "metrics/rounds/2/eval/ppo.json": {"data": {"kl": 2.0, "win_rate_gold": r2}},
            "metrics/rounds/2/eval/rto.json": {"data": {"skipped": 1}},
        }
        return {"name": f"seeds-20261207-010000-s{seed}", "data": {"params": {}, "metrics": metrics}}

    show = [node(0, 0.6, 0.7), node(1, 0.62, 0.75), node(2, 0.58, 0.74)]
    runs = seed_runs(show, "seeds-20261207-010000")
    assert set(runs) == {"ppo", "ppo r2"}  # rto skipped in round 2: no run
    gains = round_gains(runs, 0.95)
    expected = welch_interval([0.7, 0.75, 0.74], [0.6, 0.62, 0.58], 0.95)
    assert list(gains) == ["ppo r2 - r1"] and gains["ppo r2 - r1"]["win_rate_gold"] == expected
    assert gains["ppo r2 - r1"]["win_rate_gold"]["diff"] == pytest.approx(0.73 - 0.6)


def agreement(judge, value, low, high, n=35):
    key = f"label_agreement_{judge}"
    return {key: value, f"{key}_ci_low": low, f"{key}_ci_high": high, f"n_pairs_{judge}": n}


@pytest.mark.parametrize(
    "judges, floor, promoted",
    [
        (agreement("heldout_rm", 0.457, 0.286, 0.629), 0.5, 0),  # at chance (the HH run's held-out RM)
        (agreement("heldout_rm", 0.50, 0.49, 0.51, n=2000), 0.5, 0),  # chance, measured precisely
        (agreement("heldout_rm", 0.58, 0.51, 0.65), 0.5, 1),  # better than chance
        (agreement("heldout_rm", 0.58, 0.51, 0.65), 0.6, 0),  # a floor a team set higher
        (agreement("heldout_rm", 0.457, 0.286, 0.629), None, 1),  # the check turned off
        (agreement("lm", 0.3, 0.2, 0.4), 0.5, 1),  # another judge's numbers do not count
        ({}, 0.5, 1),  # no agreement measured: nothing to hold against it
    ],
)
def test_the_gate_promotes_only_on_a_judge_that_agrees_with_the_held_out_labels(judges, floor, promoted):
    gate = type("G", (Gate,), {"min_judge_agreement": floor})
    res = {"sft": _m(0.5, 0.0, 0), "rto": _m(0.82, 3.7)}
    reg = Registry()
    infos = {"rto": {"registered_model": "rlhf-policy", "version": 3}}
    decision = champion_gate(res, infos, gate, "rlhf-policy", reg, "heldout_rm", judges)
    assert decision["promoted"] == promoted and len(reg.promoted) == promoted
    if not promoted:
        assert decision["reason"].startswith("judge heldout_rm: rto wins 82.0% [79.0%, 85.0%] vs SFT")
        assert "but judge heldout_rm agrees with the held-out labels on " in decision["reason"]
        assert f"not above {floor:.1%} (champion.min_judge_agreement)" in decision["reason"]
