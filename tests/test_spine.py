"""The tiny-profile pipeline base -> prepare -> sft, run for real by DVC through Prefect, tracked by MLflow."""

import json
import time

import mlflow
import pytest
from safetensors.torch import load_file

from tests.conftest import run_cmd

pytestmark = pytest.mark.slow


def test_sft_changes_the_weights_and_lowers_heldout_loss(tiny_pipeline):
    root = tiny_pipeline["root"]
    base = load_file(root / "models/base/model.safetensors")
    sft = load_file(root / "models/sft/model.safetensors")
    assert base.keys() == sft.keys()
    changed = [k for k in base if not (base[k] == sft[k]).all()]
    assert len(changed) == len(base), f"unchanged tensors: {set(base) - set(changed)}"
    m = json.loads((root / "metrics/sft.json").read_text())
    assert m["heldout_loss"] < m["base_heldout_loss"]
    steps = (root / "metrics/sft_steps.csv").read_text().splitlines()
    assert steps[0].startswith("step,loss") and len(steps) == m["steps"] + 1
    splits = json.loads((root / "metrics/prepare.json").read_text())
    assert all(v > 0 for v in splits.values())


def test_the_tune_split_is_carved_from_the_policy_prompts_and_shares_none(tiny_pipeline):
    prepared = tiny_pipeline["root"] / "data/prepared"
    read = lambda name: [json.loads(x)["prompt"] for x in (prepared / f"{name}.jsonl").read_text().splitlines()]
    tune, policy, evaluation = read("tune"), read("policy"), read("eval")
    assert len(tune) == 12 and len(set(tune)) == 12  # profiles/tiny.yaml: prepare.tune_prompts
    assert not set(tune) & set(policy) and not set(tune) & set(evaluation) and not set(tune) & set(read("comparison"))


def test_second_repro_does_nothing(tiny_pipeline):
    root = tiny_pipeline["root"]
    # Other tests of the session run stages with other params on this project and put them back; the
    # first repro settles whatever they left (it may check outputs out of the run cache), the second
    # must then find nothing to do.
    run_cmd(root, "dvc", "repro", "sft")
    t0 = time.time()
    out = run_cmd(root, "dvc", "repro", "sft").stdout
    print(f"no-op dvc repro sft: {time.time() - t0:.2f} s")
    assert "Running stage" not in out and "up to date" in out


def test_mlflow_has_the_run_and_a_registered_model_that_generates(tiny_pipeline):
    root = tiny_pipeline["root"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["rlhf-pipeline"], filter_string="tags.dvc_stage = 'sft'", order_by=["start_time ASC"]
    )
    run = runs.iloc[0]  # the fixture's `dvc repro sft` (other tests may rerun sft later)
    assert run["status"] == "FINISHED" and run["params.sft.lr"] == "0.001"
    assert len(run["tags.git_commit"]) == 40 and run["tags.prefect_flow_run_id"]
    history = mlflow.MlflowClient().get_metric_history(run["run_id"], "train/loss")
    assert len(history) == int(run["metrics.steps"])
    pipe = mlflow.transformers.load_model("models:/rlhf-sft/1")
    out = pipe("The movie was", max_new_tokens=8, do_sample=False)
    assert out[0]["generated_text"].startswith("The movie was")


def test_prefect_recorded_a_flow_run_per_stage(tiny_pipeline):
    proc = run_cmd(
        tiny_pipeline["root"],
        "prefect",
        "flow-run",
        "ls",
        "--limit",
        "50",
        "--flow-name",
        "base",
        "--flow-name",
        "prepare",
        "--flow-name",
        "sft",
        PREFECT_API_URL=tiny_pipeline["prefect_api"],
        COLUMNS="250",
    )
    for stage in ("base", "prepare", "sft"):
        assert f" {stage} " in proc.stdout.replace("│", " ")
    assert proc.stdout.count("COMPLETED") >= 3
