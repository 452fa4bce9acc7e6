"""What every stage flow shares: params, validation before work, one-line errors, MLflow runs, metrics files."""

from __future__ import annotations

import copy
import csv
import logging
import os
import shutil
from pathlib import Path

from flows import tracking
from flows.paths import CHECKPOINTS, MLARTIFACTS, MLFLOW_DB, PARAMS, ROOT, ROUND, STAGE_METRICS, model_dir
from tasks import config
from tasks.runtime.errors import PipelineError, die_cleanly
from tasks.runtime.files import atomic_path, write_json

TRACKING_URI = f"sqlite:///{MLFLOW_DB}"  # unless MLFLOW_TRACKING_URI says otherwise


_PARAMS_CACHE: dict = {}


def read_params() -> dict:
    """params.yaml, parsed once per process while the file stays the same (a stage reads it at every step of its
    flow; `dvc exp run -S` and tests rewrite it between runs, so a changed file is read again)."""
    try:
        stat = PARAMS.stat()
        key = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if key is None or _PARAMS_CACHE.get("key") != key:
        _PARAMS_CACHE.update(key=key, params=config.read_params(PARAMS))
    return copy.deepcopy(_PARAMS_CACHE["params"])


class NoTracebackForUserErrors(logging.Filter):
    """A PipelineError met mid-stage (a reward function returning NaN) is the person's one 'error:' line
    (die_cleanly): Prefect's run loggers keep their line saying the run failed, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError) and not os.environ.get("RLHF_DEBUG"):
            record.exc_info, record.exc_text = None, None
        return True


def run_stage(flow, sections: tuple[str, ...], *preflights) -> None:
    """Validate the params sections a stage reads (and, with each `preflight(params)`, its inputs) before
    anything starts, then run its flow; user errors print one line and exit 2."""

    def main():
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).addFilter(NoTracebackForUserErrors())
        child = child_of_pipeline(flow)  # first: a stage refused by its checks is a failed node too
        try:
            params = read_params()
            for s in sections:
                config.load(s, params)
            if ROUND > 1:  # a later round's stage: the rounds section, checked against the labeler and algorithms
                config.rounds(params)
            if "compute" in sections:  # a cuda/bf16 request this machine cannot honour fails here, not mid-stage
                from tasks.runtime.device import pick_device  # torch: only the stages that compute load it

                pick_device(config.load("compute", params))
            for preflight in preflights:
                preflight(params)
        except Exception as e:
            if child is not None:
                refused(child, e)
            raise
        if child is None:
            flow()
        else:
            from prefect.flow_engine import run_flow

            run_flow(flow, flow_run=child)

    die_cleanly(main)


PIPELINE_RUN = "RLHF_PIPELINE_FLOW_RUN_ID"  # set by flows/pipeline.py for the stages DVC runs for it


def refused(flow_run, error: Exception) -> None:
    """The stage's flow run (and so its node in the pipeline run) Failed with the one-line error."""
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Failed(message=str(error)), force=True)
    except Exception as e:  # the stage's own one-line error must still be what the person sees
        print(f"could not mark flow run {flow_run.id} failed ({type(e).__name__})")


def child_of_pipeline(flow):
    """When DVC runs this stage for a pipeline flow run, this stage's flow run, created as its child: a node of
    the pipeline run's graph, linked as a subflow is (Prefect's server then mirrors the stage's state on the
    node). None outside a pipeline run, or when the pipeline run is not on this Prefect server."""
    parent = os.environ.get(PIPELINE_RUN)
    if not parent:
        return None
    from uuid import UUID, uuid4

    from prefect import Task
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    try:
        with get_client(sync_client=True) as client:
            name = flow.name if ROUND == 1 else f"{flow.name}_r{ROUND}"  # the node: the DVC stage's name
            node = client.create_task_run(
                Task(name=name, fn=flow.fn), UUID(parent), f"{name}-{uuid4().hex[:8]}", name=name
            )
            return client.create_flow_run(flow, parameters={}, state=Pending(), parent_task_run_id=node.id)
    except Exception as e:  # e.g. the pipeline ran on a temporary server this process cannot see
        print(f"{flow.name}: not linked to pipeline flow run {parent} ({type(e).__name__})")
        return None


def no_retry_on_user_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient failures, never a PipelineError (a bad input stays bad)."""
    try:
        state.result()
    except PipelineError:
        return False
    except Exception:
        return True
    return True


def write_metrics(stage: str, metrics: dict) -> None:
    """metrics/<stage>.json: the DVC metrics file (`dvc metrics show`)."""
    write_json(STAGE_METRICS / f"{stage}.json", metrics)


def write_steps(stage: str, history: list[dict]) -> Path:
    """metrics/<stage>_steps.csv: the per-step curves `dvc plots show` draws."""
    path = STAGE_METRICS / f"{stage}_steps.csv"
    keys = list(dict.fromkeys(k for row in history for k in row)) or ["step"]  # a skipped stage: header only
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    return path


def finish(stage: str, metrics: dict, history: list[dict] | None = None) -> None:
    """A stage's numbers: MLflow run metrics, metrics/<stage>.json and (if any) the per-step curves."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    if history:
        write_steps(stage, history)
    write_metrics(stage, metrics)
    shutil.rmtree(CHECKPOINTS / stage, ignore_errors=True)  # outputs are complete: no resume point needed


def stage_params(params: dict, *sections: str) -> dict:
    return {s: config.resolved(s, params) for s in sections if s in config.SECTIONS}


def stage_run(stage: str, params: dict, *sections: str):
    """The stage's MLflow run (context manager), with the params of its sections (and `compute`) logged."""
    experiment = config.load("tracking", params).experiment
    logged = stage_params(params, stage, *sections, "compute")
    return tracking.stage_run(stage, experiment, logged, TRACKING_URI, MLARTIFACTS, ROOT)


def mlflow_setup(params: dict):
    """mlflow, pointed at this project's store and experiment."""
    return tracking.setup(config.load("tracking", params).experiment, TRACKING_URI, MLARTIFACTS)


def step_logger(stage: str):
    """Live per-step curves in the stage's MLflow run (called from the training loop)."""
    prefix = tracking.metric_prefix(stage)
    return lambda step, row: tracking.log_history([row], prefix=prefix)


def skip(stage: str, why: str) -> None:
    """The stage records 'skipped': a marker output, metrics and an empty steps file (DVC wants every output)."""
    with atomic_path(model_dir(stage)) as staging:
        staging.mkdir()
        (staging / "SKIPPED").write_text(f"{stage}: {why}\n")
    write_metrics(stage, {"skipped": 1})
    write_steps(stage, [])
    print(f"{stage}: skipped ({why})")


def skipped(stage: str) -> bool:
    """True (and the stage recorded as skipped) when pipeline.algorithms leaves this stage out."""
    if stage in config.load("pipeline", read_params()).algorithms:
        return False
    skip(stage, "not in pipeline.algorithms")
    return True


def skipped_early(stage: str) -> bool:
    """A policy stage that pipeline.algorithms leaves out, recorded as skipped before torch, Prefect and the
    stage's code load (seconds per skipped stage in every run and experiment). Inside a pipeline flow run the
    stage takes its full path instead, so its node shows in the run's graph; a params.yaml that does not
    validate takes it too, so the stage says what is wrong in one line."""
    if os.environ.get(PIPELINE_RUN):
        return False
    try:
        algorithms = config.load("pipeline", read_params()).algorithms
    except Exception:
        return False
    return stage not in algorithms and skipped(stage)
