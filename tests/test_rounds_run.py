"""Iterated RLHF end to end on the tiny profile with real DVC, Prefect and MLflow: round 1 is a copy of the
session's whole tiny run (tests/conftest.py full_pipeline, shared with test_pipeline.py on one worker); then
rounds.count 2 (only round 2's stages run; its comparisons are the round-1 champion's samples on fresh prompts;
its RM is retrained on both rounds' pairs; one rating across rounds), a no-op repro, then 3 (only round 3
runs). (One module: the tests run in this order on one project.)"""

import json
import re
import shutil

import mlflow
import pytest
import yaml

from flows.rounds import ROUND_STAGES
from tests.conftest import run_cmd, set_params

pytestmark = pytest.mark.slow
ALWAYS_CHANGED = {"labels", "labels_r2", "labels_r3"}  # DVC runs these at every repro (they read the label store)


def ran(proc) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout)) - ALWAYS_CHANGED


def repro_with_rounds(project, count: int):
    root = project["root"]
    set_params(root, rounds={"count": count})
    run_cmd(root, "python", "-m", "flows.rounds", "sync")
    return run_cmd(root, "dvc", "repro", PREFECT_API_URL=project["api"], timeout=900)


def read(root, rel: str):
    path = root / rel
    return json.loads(path.read_text()) if rel.endswith(".json") else [json.loads(x) for x in path.open()]


@pytest.fixture(scope="module")
def project(full_pipeline, tmp_path_factory):
    """A copy of the session's whole tiny run as it was after its repro (its gate lets any policy through;
    ppo, dpo and rto trained): round 1."""
    root = tmp_path_factory.mktemp("rounds") / "proj"
    shutil.copytree(full_pipeline["snapshot"], root, symlinks=True)  # its DVC cache too: outputs are plain copies
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return {"root": root, "api": full_pipeline["api"]}


def test_round_two_learns_from_the_round_one_champion(project):
    root = project["root"]
    assert ran(repro_with_rounds(project, 2)) == {f"{s}_r2" for s in ROUND_STAGES if s != "labels"}
    champion = read(root, "metrics/champion.json")
    assert champion["promoted"] == 1 and champion["standing_round"] == 1
    # round 2's comparisons: the champion's samples, on policy prompts no earlier comparison used
    first = {r["prompt"] for r in read(root, "data/samples/completions.jsonl")}
    second = read(root, "data/rounds/2/samples/completions.jsonl")
    assert second and not first & {r["prompt"] for r in second}
    assert sampled_again(root, f"models/{champion['standing_policy']}", second)
    # the retrained RM saw both rounds' pairs; the rating puts both rounds' policies on SFT's scale
    pairs = len(read(root, "data/comparisons/pairs.jsonl")) + len(read(root, "data/rounds/2/comparisons/pairs.jsonl"))
    rm = read(root, "metrics/rounds/2/rm.json")
    assert rm["n_pairs"] == pairs
    for key in ("heldout_accuracy_r1", "heldout_accuracy_r2", "previous_rm_heldout_accuracy_r2"):  # and round 1's
        assert 0 <= rm[key] <= 1  # RM on round 2's pairs: the shift a new RM is meant to fix
    gain = rm["heldout_accuracy_r2"] - rm["previous_rm_heldout_accuracy_r2"]  # with its paired bootstrap interval
    assert rm["rm_gain_r2"] == pytest.approx(gain) and rm["rm_gain_r2_ci_low"] <= gain <= rm["rm_gain_r2_ci_high"]
    rating = read(root, "metrics/rounds/2/rating.json")["ratings"]
    assert (
        set(rating) == {"sft", *(f"{a} r{r}" for a in ("ppo", "dpo", "rto") for r in (1, 2))}
        and rating["sft"]["elo"] == 1000.0
    )
    assert (root / "plots/rounds/2/rating.png").read_bytes()[:4] == b"\x89PNG"
    # every round-2 run carries its round, and so does its policy's registered version
    runs = mlflow.search_runs(experiment_names=["rlhf-pipeline"], filter_string="tags.round = '2'")
    assert {"sample", "rm", "ppo", "dpo", "eval", "champion"} <= set(runs["tags.stage"])
    version = read(root, "models/rounds/2/dpo/mlflow_run.json")["version"]
    tags = mlflow.MlflowClient().get_model_version("rlhf-policy", str(version)).tags
    assert tags["round"] == "2" and tags["algorithm"] == "dpo"


def sampled_again(root, model: str, rows: list[dict]) -> bool:
    """The round's first prompt's completions are the ones `model` gives for the sample stage's seed."""
    import sys

    sys.path.insert(0, str(root))
    from tasks import config
    from tasks.label.sampling import sample_groups
    from tasks.runtime.context import SINGLE_PROCESS

    cfg = config.load("sample", config.read_params(root / "params.yaml"))
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    groups = sample_groups(cfg.model_copy(update={"gold_scorer": None}), prompts, root / model, SINGLE_PROCESS)
    return [c["text"] for c in groups[0]["completions"]] == [r["text"] for r in rows if r["prompt"] == prompts[0]]


def test_a_repro_runs_nothing_then_round_three_runs_only_its_own(project):
    """After round 2 a repro runs nothing; raising the count to 3 runs exactly round 3's stages (`dvc status` says
    so before, the repro's log after) and leaves rounds 1 and 2 as they were (their dvc.lock entries)."""
    root = project["root"]
    again = run_cmd(root, "dvc", "repro", PREFECT_API_URL=project["api"])
    assert ran(again) == set(), again.stdout[-2000:]
    locked = lambda: yaml.safe_load((root / "dvc.lock").read_text())["stages"]  # noqa: E731
    before = locked()
    set_params(root, rounds={"count": 3})
    run_cmd(root, "python", "-m", "flows.rounds", "sync")
    round_three = {f"{s}_r3" for s in ROUND_STAGES if s != "labels"}
    assert set(json.loads(run_cmd(root, "dvc", "status", "--json").stdout)) - ALWAYS_CHANGED == round_three
    third = run_cmd(root, "dvc", "repro", PREFECT_API_URL=project["api"], timeout=900)
    assert ran(third) == round_three
    after = locked()
    assert {k: after[k] for k in before if k not in ALWAYS_CHANGED} == {
        k: v for k, v in before.items() if k not in ALWAYS_CHANGED
    }
    rating = read(root, "metrics/rounds/3/rating.json")["ratings"]
    assert {f"{a} r{r}" for a in ("ppo", "dpo", "rto") for r in (1, 2, 3)} | {"sft"} == set(rating)


def test_a_continued_policy_keeps_sft_as_its_reference(project):
    """rounds.policies: continue: the policy's weights are its previous round's, its KL reference SFT's."""
    from tasks import config
    from tasks.lm.models import load_lm
    from tasks.rl.actors import Policy

    root = project["root"]
    params = config.read_params(root / "params.yaml")
    params["ppo"]["reward"] = {"tasks.label.gold:shorter": 1.0}  # no RM needed for the check
    cfg = config.load("ppo", params)
    pol = Policy(cfg, root / "models/sft", root / "models/rm", "cpu", False, "ppo", root / "models/ppo")
    name, weight = next(iter(pol.model.state_dict().items()))
    assert weight.equal(load_lm(root / "models/ppo")[0].state_dict()[name])
    assert pol.ref.state_dict()[name].equal(load_lm(root / "models/sft")[0].state_dict()[name])
    assert not weight.equal(pol.ref.state_dict()[name])
