"""A training stage killed mid-way (SIGKILL) resumes from its last checkpoint on rerun and ends where an
uninterrupted run ends; a failed stage's MLflow run ends FAILED."""

import json
import os
import signal
import subprocess
import time

import mlflow
import pytest
import torch

from tests.conftest import project_env, run_cmd, set_params

pytestmark = pytest.mark.slow
TOL = 1e-6  # CPU, fp32, same seed: the resumed run replays the same batches from the same state


def steps_csv(root):
    return (root / "metrics/sft_steps.csv").read_text().splitlines()


def test_killed_sft_resumes_and_matches_the_uninterrupted_run(tiny_pipeline):
    root, api = tiny_pipeline["root"], tiny_pipeline["prefect_api"]
    saved = {p: (root / p).read_text() for p in ("params.yaml", "metrics/sft.json", "metrics/sft_steps.csv")}
    ckpt = root / ".checkpoints/sft/state.pt"
    try:
        set_params(root, sft={"max_steps": 400, "checkpoint_every": 20, "checkpoint_minutes": 0})
        run_cmd(root, "python", "-m", "flows.sft", PREFECT_API_URL=api)  # uninterrupted
        ref, ref_steps = json.loads((root / "metrics/sft.json").read_text()), steps_csv(root)
        assert not ckpt.parent.exists()  # deleted on success
        model_before = (root / "models/sft/model.safetensors").read_bytes()

        proc = subprocess.Popen(
            ["python", "-m", "flows.sft"],
            cwd=root,
            start_new_session=True,
            env=project_env(root, PREFECT_API_URL=api),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed_at, deadline = None, time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                step = torch.load(ckpt, weights_only=True)["step"]
            except Exception:  # not there yet, or being replaced
                step = 0
            if step >= 100:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.05)
        proc.wait(timeout=30)
        assert killed_at is not None, "the run ended before it could be killed mid-way"
        assert (root / "models/sft/model.safetensors").read_bytes() == model_before  # outputs untouched

        out = run_cmd(root, "python", "-m", "flows.sft", PREFECT_API_URL=api)
        log = out.stdout + out.stderr
        resumed = int(log.split("resuming from the checkpoint at step ")[1].split()[0])
        assert killed_at <= resumed < 400  # did not redo the finished steps
        assert f"{resumed}/400" in log and " 0/400" not in log
        got = json.loads((root / "metrics/sft.json").read_text())
        print(
            f"killed at step >= {killed_at}, resumed at {resumed}; heldout loss {got['heldout_loss']:.8f} "
            f"vs uninterrupted {ref['heldout_loss']:.8f}"
        )
        assert got["steps"] == ref["steps"] == 400
        assert abs(got["heldout_loss"] - ref["heldout_loss"]) <= TOL
        assert abs(got["train_loss_last"] - ref["train_loss_last"]) <= TOL
        assert steps_csv(root)[0] == ref_steps[0] and len(steps_csv(root)) == len(ref_steps)
        assert not ckpt.parent.exists()
    finally:
        for p, text in saved.items():
            (root / p).write_text(text)
        run_cmd(root, "dvc", "checkout", "sft", "--force")


def test_a_failed_stage_run_ends_failed_in_mlflow(tiny_pipeline):
    root = tiny_pipeline["root"]
    text = (root / "params.yaml").read_text()
    try:  # the demonstrations vanish after the stage started: it fails mid-way, inside its MLflow run
        (root / "data/prepared/sft.jsonl").rename(root / "data/prepared/sft.jsonl.bak")
        proc = run_cmd(root, "python", "-m", "flows.sft", check=False, PREFECT_API_URL=tiny_pipeline["prefect_api"])
    finally:
        (root / "data/prepared/sft.jsonl.bak").rename(root / "data/prepared/sft.jsonl")
        (root / "params.yaml").write_text(text)
    assert proc.returncode != 0
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run = mlflow.search_runs(
        experiment_names=["rlhf-pipeline"], filter_string="tags.dvc_stage = 'sft'", order_by=["start_time DESC"]
    ).iloc[0]
    assert run["status"] == "FAILED" and "sft.jsonl" in run["tags.error"]


def test_a_checkpoint_of_another_layout_version_is_ignored_not_loaded(tmp_path, monkeypatch):
    """A checkpoint written by code that stored its models another way (an older LAYOUT_VERSION) is ignored and
    training starts over, instead of the stage failing in load_state_dict; under the same version it loads."""
    from tasks.runtime import checkpoint

    monkeypatch.setattr(checkpoint, "LAYOUT_VERSION", checkpoint.LAYOUT_VERSION - 1)
    old = checkpoint.Checkpoint(tmp_path / "rm", "rm", 1, {"cfg": 1})
    old.save(3, {"model": torch.nn.Linear(2, 2)}, {"history": []})
    assert old.load({"model": torch.nn.Linear(2, 2)})["step"] == 3
    monkeypatch.undo()
    model = torch.nn.Linear(2, 3)  # another shape: loading it would fail
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert checkpoint.Checkpoint(tmp_path / "rm", "rm", 1, {"cfg": 1}).load({"model": model}) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checkpoints_are_written_only_once_they_pay(tmp_path, monkeypatch):
    """Due at multiples of `every`, and only when `minutes` of training passed since the start or last save."""
    from tasks.runtime import checkpoint

    clock = [1000.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: clock[0])
    ckpt = checkpoint.Checkpoint(tmp_path / "sft", "sft", 5, {"cfg": 1}, minutes=10)
    assert not ckpt.due(5)  # 0 s in
    clock[0] += 599
    assert not ckpt.due(10)  # 9:59 in
    clock[0] += 1
    assert ckpt.due(15) and not ckpt.due(16)  # 10:00 in, but only at a multiple of 5
    ckpt.save(15, {"model": torch.nn.Linear(2, 2)}, {"history": []})
    assert not ckpt.due(20)  # the clock restarts at a save
    clock[0] += 600
    assert ckpt.due(20)
    assert checkpoint.Checkpoint(tmp_path / "x", "x", 5, {}, minutes=0).due(5)
    assert not checkpoint.Checkpoint(None, "x", 5, {}, minutes=0).due(5)  # no directory: off
