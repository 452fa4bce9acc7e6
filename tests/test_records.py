"""Run records: the CSVs in git that keep the frontier's and the seeds' runs once their DVC experiments are
gone (another checkout, another session, `dvc exp gc`), merged with the experiments DVC lists now."""

import pytest

from tasks.eval.dvc_experiments import merge_seed_runs, read_records, write_runs


def test_frontier_keeps_recorded_runs_and_counts_a_seed_once(tmp_path):
    """runs.csv from an earlier plot + the experiments DVC lists now: a recorded run stays a point's seed, a
    run of the same (algorithm, coefficient, seed) is one seed (DVC's over the record, the newer over the
    older), and runs whose seed is unknown all count."""
    from tasks.eval.dvc_experiments import read_records
    from tasks.eval.frontier import merge, points, write_runs

    def run(name, coef, seed, kl, setup="S"):
        interval = {"kl": kl, "kl_ci_low": kl - 0.1, "kl_ci_high": kl + 0.1}
        return {"experiment": name, "algo": "ppo", "coef": coef, "seed": seed, "setup": setup, **interval}

    other_task = run("frontier-z-0-s2", 0.05, 2, 9.0, setup="another model")  # never merged
    write_runs(
        [run("frontier-a-0-s0", 0.05, 0, 1.0), run("workspace", 0.02, 0, 3.0), other_task], tmp_path / "runs.csv"
    )
    recorded = read_records(tmp_path / "runs.csv")  # strings, as a CSV gives them back
    assert recorded[0]["coef"] == "0.02" and recorded[0]["seed"] == "0"  # sorted by coefficient
    fresh = [run("frontier-b-0-s1", 0.05, 1, 2.0), run("workspace", 0.02, 0, 5.0), run("frontier-c-0-s1", 0.05, 1, 4.0)]
    merged = merge(recorded, fresh, "S")
    assert sorted(r["experiment"] for r in merged) == ["frontier-a-0-s0", "frontier-c-0-s1", "workspace"]
    pts = {p["coef"]: p for p in points(merged)["ppo"]}
    assert pts[0.05]["n_seeds"] == 2 and pts[0.05]["kl"] == pytest.approx(2.5)  # 1.0 recorded, 4.0 the newer s1
    assert pts[0.02]["n_seeds"] == 1 and pts[0.02]["kl"] == 5.0  # the workspace now, not the recorded one
    unseeded = merge([], [run("x", 0.1, None, 1.0), run("y", 0.1, None, 2.0)], "S")
    assert points(unseeded)["ppo"][0]["n_seeds"] == 2


def test_frontier_sweep_adds_the_default_coefficients_under_the_other_seeds():
    from flows.frontier import experiments
    from tasks.sections.run import FrontierConfig

    params = {"ppo": {"seed": 0}, "dpo": {"seed": 0}, "grpo": {}, "rloo": {}, "rto": {}}
    cfg = FrontierConfig(**{f"{a}_kl_coef": [0.1, 0.2] for a in ("ppo", "dpo", "rto", "grpo", "rloo")}, seeds=[0, 1, 2])
    batch = experiments(cfg, params, "T")
    assert list(batch)[-2:] == ["frontier-T-default-s1", "frontier-T-default-s2"] and len(batch) == 2 * 3 + 2
    assert batch["frontier-T-default-s2"] == {"ppo.seed": 2, "dpo.seed": 2}  # rto, grpo, rloo take ppo's seed
    assert batch["frontier-T-1-s0"]["ppo.kl.coef"] == 0.2 and batch["frontier-T-1-s0"]["ppo.seed"] == 0
    without = experiments(cfg.model_copy(update={"default_seeds": False}), params, "T")
    assert len(without) == 6 and not any("default" in n for n in without)


def test_seeds_record_keeps_every_round_and_a_batch_replaces_its_own_seeds(tmp_path):
    def row(name, seed, win, setup="S"):
        return {
            "experiment": name,
            "seed": seed,
            "setup": setup,
            "win_rate": win,
            "kl": 2.0 + seed,
            "win_rate_ci_low": win - 0.1,
        }

    session_a = {"ppo": [row("seeds-a-s0", 0, 0.6), row("seeds-a-s1", 1, 0.7)], "ppo r2": [row("seeds-a-s1", 1, 0.8)]}
    session_a["dpo"] = [row("seeds-x-s3", 3, 0.9, setup="another model")]  # another task's run: never merged
    write_runs(session_a, tmp_path)
    recorded = read_records(tmp_path / "runs.csv")
    assert {(r["algo"], r["seed"]) for r in recorded} == {("dpo", "3"), ("ppo", "0"), ("ppo", "1"), ("ppo r2", "1")}
    assert read_records(tmp_path / "ppo.csv")[1]["win_rate"] == "0.7"  # what dvc plots draws: round 1 only
    session_b = {"ppo": [row("seeds-b-s0", 0, 0.65), row("seeds-b-s2", 2, 0.75)], "ppo r2": [row("seeds-b-s2", 2, 0.9)]}
    merged = merge_seed_runs(recorded, session_b, "S")
    assert "dpo" not in merged
    assert [(r["experiment"], r["seed"], r["win_rate"]) for r in merged["ppo"]] == [
        ("seeds-b-s0", 0, 0.65),  # the batch's seed 0 over the recorded one
        ("seeds-a-s1", 1, 0.7),  # recorded, typed back: int seed, float metrics
        ("seeds-b-s2", 2, 0.75),
    ]
    assert [r["seed"] for r in merged["ppo r2"]] == [1, 2] and merged["ppo r2"][0]["kl"] == 3.0
    assert "algo" not in merged["ppo"][0] and "win_rate_gold" not in merged["ppo"][1]  # empty cells dropped
    assert merge_seed_runs([], session_b, "S") == {
        a: sorted(rows, key=lambda r: r["seed"]) for a, rows in session_b.items()
    }


def test_matched_kl_reads_every_algorithm_s_line_at_the_middle_of_their_common_range():
    from tasks.eval.frontier import matched_kl

    def runs(algo, kls, golds):
        return [
            {"experiment": f"e{i}", "algo": algo, "kl": k, "gold_reward": g} for i, (k, g) in enumerate(zip(kls, golds))
        ]

    records = runs("ppo", [1, 2, 3], [1, 3, 2]) + runs("dpo", [1.5, 2.5, 3.5], ["0.0", "0.5", "1.0"])  # CSV strings too
    records += runs("rto", [2, 2, 2], [0.1, 0.2, 0.3]) + runs("rloo", [5, 6, 7], [1, 2, 3])  # one KL; no overlap
    m = matched_kl(records)
    assert list(m) == ["ppo_vs_dpo"]  # rto has no line; rloo's runs reach no KL the others reach
    assert m["ppo_vs_dpo"]["kl"] == pytest.approx(2.25) and m["ppo_vs_dpo"]["kl_range"] == [1.5, 3]
    assert m["ppo_vs_dpo"]["ppo"]["mean"] == pytest.approx(2.125) and m["ppo_vs_dpo"]["dpo"]["mean"] == pytest.approx(
        0.375
    )
    assert m["ppo_vs_dpo"]["difference"]["diff"] == pytest.approx(1.75)


def test_the_setup_fingerprint_counts_the_rounds_only_where_there_are_later_rounds():
    import yaml

    from flows.paths import ROOT
    from tasks.eval.dvc_experiments import setup_key

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    one = setup_key(params)
    assert setup_key({**params, "rounds": {**params["rounds"], "rm": "continue"}}) == one  # one round: unread
    two = setup_key({**params, "rounds": {**params["rounds"], "count": 2}})
    assert two != one  # a report of one round never merges a recorded round 2
    assert setup_key({**params, "rounds": {**params["rounds"], "count": 2, "rm": "continue"}}) != two
    assert setup_key({**params, "ppo": {**params["ppo"], "seed": 7}}) == one  # the policy stages' own: not the task
