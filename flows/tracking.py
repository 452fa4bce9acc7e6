"""MLflow: one run per stage, params/metrics/tags, the model logged and registered, the champion alias.

The flows pass the default store (the project's sqlite:///mlflow.db, artifacts in ./mlartifacts);
MLFLOW_TRACKING_URI overrides it (an MLflow server, a shared database, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from flows.paths import model_dir
from tasks.runtime.files import git_commit
from tasks.sections.stages import ONLINE_STAGES

# What the logged model needs to be loaded back: pinned like pyproject.toml. Passing it explicitly keeps
# MLflow from importing torchvision etc. to infer requirements (that inference fails on transformers 5).
MODEL_REQUIREMENTS = ["torch==2.13.0", "transformers==5.23.0", "safetensors==0.8.0", "tokenizers==0.23.3"]


RUN_FILE = "mlflow_run.json"  # in a policy's model dir: its training run and registered version (eval uses it)


def run_info(name: str) -> dict:
    """A policy's training run and registered version (its model dir's RUN_FILE); {} when it has none."""
    path = model_dir(name) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def setup(experiment: str, default_uri: str, artifacts_dir: Path):
    """mlflow, pointed at MLFLOW_TRACKING_URI (else default_uri) and the experiment (created if new; with a
    local store its artifacts go to artifacts_dir)."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        local = uri.startswith("sqlite:") or uri.startswith("file:")
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # created meanwhile by a parallel stage
            mlflow.create_experiment(experiment, artifact_location=artifacts_dir.as_uri() if local else None)
    mlflow.set_experiment(experiment)
    return mlflow


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _prefect_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return flow_run.id
    except Exception:
        return None


def metric_prefix(stage: str) -> str:
    """Per-step metric names: train/<name> for the supervised loop (sft, rm, dpo), <stage>/<name> for RL stages."""
    return f"{stage}/" if stage in ONLINE_STAGES else "train/"


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: dict, default_uri: str, artifacts_dir: Path, repo: Path):
    """An MLflow run for one stage, tagged with the git commit of repo. It ends FAILED (with the error as a
    tag) if the stage raises."""
    mlflow = setup(experiment, default_uri, artifacts_dir)
    tags = {
        "dvc_stage": stage,
        "git_commit": git_commit(repo),
        "stage": stage,
        # DVC names the experiment a stage runs in (dvc exp run -n); the pipeline flow also passes it
        "dvc_experiment": os.environ.get("DVC_EXP_NAME") or os.environ.get("RLHF_DVC_EXPERIMENT") or "workspace",
        "round": os.environ.get("RLHF_ROUND", "1"),  # params.yaml: rounds (flows/paths.py: ROUND)
    }
    if pid := _prefect_run_id():
        tags["prefect_flow_run_id"] = str(pid)
    if parent := os.environ.get("RLHF_PARENT_RUN_ID"):  # set by flows/pipeline.py: nest under its run
        tags["mlflow.parentRunId"] = parent
    run = mlflow.start_run(run_name=f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    try:
        mlflow.log_params(flatten(params))
        yield run
    except BaseException as e:
        mlflow.set_tag("error", f"{type(e).__name__}: {e}"[:5000])
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_history(history: list[dict], prefix: str = "") -> None:
    """Per-step metrics (the loss curve) into the active run."""
    import mlflow

    for row in history:
        step = int(row["step"])
        mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in row.items() if k != "step"}, step=step)


def log_model(model, tok, task: str, registered_name: str | None, tags: dict | None = None, nbytes: int = 0):
    """Log a transformers model (+tokenizer) of about nbytes to the active run; register it as a new version
    if named. Returns the registered model version (or None).

    (MLflow's other way, a checkpoint directory's path, fails on transformers 5: its task table holds names
    where MLflow expects classes.)
    """
    import mlflow

    with staged_in_memory(nbytes):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tok},
            name="model",
            task=task,
            pip_requirements=MODEL_REQUIREMENTS,
            registered_model_name=registered_name,
        )
    if not registered_name:
        return None
    client = mlflow.MlflowClient()
    version = info.registered_model_version
    for k, v in (tags or {}).items():
        client.set_model_version_tag(registered_name, str(version), k, str(v))
    return version


@contextlib.contextmanager
def staged_in_memory(nbytes: int, shm: Path = Path("/dev/shm")):
    """MLflow copies a logged model into a temporary directory and from there into the store; with room for
    it twice in a RAM file system, that temporary copy goes there, so the model reaches the disk once."""
    import shutil
    import tempfile

    if not (shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * nbytes):
        yield False
        return
    before = tempfile.tempdir
    tempfile.tempdir = str(shm)
    try:
        yield True
    finally:
        tempfile.tempdir = before


class Registry:
    """The model registry operations the champion gate needs (tasks/eval/evaluate.py: champion_gate)."""

    def __init__(self):
        import mlflow

        self.client = mlflow.MlflowClient()

    def promote(self, name: str, version: str, alias: str, tags: dict) -> None:
        self.client.set_registered_model_alias(name, alias, version)
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, v)

    def alias_tags(self, name: str, alias: str) -> tuple[str, dict] | None:
        """(version, its tags) of the version that holds `alias`, or None (no such model, or no version has it)."""
        try:
            held = self.client.get_model_version_by_alias(name, alias)
        except Exception:
            return None
        return str(held.version), dict(held.tags)
