"""MLflow: one run per stage, params/metrics/tags, the model logged and registered.

Default store: sqlite:///mlflow.db in the project with artifacts in ./mlartifacts (both git-ignored);
MLFLOW_TRACKING_URI overrides it (an MLflow server, a shared database, ...).
"""
from __future__ import annotations

import contextlib
import os
import time

from tasks.common import ROOT, git_commit

# What the logged model needs to be loaded back: pinned like pyproject.toml. Passing it explicitly keeps
# MLflow from importing torchvision etc. to infer requirements (fails on transformers 5, see NOTES-stack).
MODEL_REQUIREMENTS = ["torch==2.13.0", "transformers==5.23.0", "safetensors==0.8.0", "tokenizers==0.23.3"]


def setup(experiment: str):
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        local = uri.startswith("sqlite:") or uri.startswith("file:")
        try:
            mlflow.create_experiment(experiment, artifact_location=(ROOT / "mlartifacts").as_uri() if local else None)
        except mlflow.exceptions.MlflowException:
            pass  # created meanwhile by a parallel stage
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


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: dict):
    """An MLflow run for one stage. It ends FAILED (with the error as a tag) if the stage raises."""
    mlflow = setup(experiment)
    tags = {"dvc_stage": stage, "git_commit": git_commit(), "stage": stage,
            # DVC names the experiment a stage runs in (dvc exp run -n); the pipeline flow also passes it
            "dvc_experiment": os.environ.get("DVC_EXP_NAME") or os.environ.get("RLHF_DVC_EXPERIMENT") or "workspace"}
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


def log_model(model, tok, task: str, registered_name: str | None, tags: dict | None = None):
    """Log a transformers model (+tokenizer) to the active run; register it as a new version if named.

    Returns the registered model version (or None).
    """
    import mlflow

    info = mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tok}, name="model", task=task,
        pip_requirements=MODEL_REQUIREMENTS, registered_model_name=registered_name)
    if not registered_name:
        return None
    client = mlflow.MlflowClient()
    version = info.registered_model_version
    for k, v in (tags or {}).items():
        client.set_model_version_tag(registered_name, str(version), k, str(v))
    return version
