"""Running a stage's training: in this process, or in compute.num_processes processes under `accelerate launch`
(DDP by default: gloo on CPU, NCCL on GPUs; FSDP, DeepSpeed or several machines through an accelerate config
file in compute.accelerate_config). Only flows import this module.

A stage flow calls `run(stage, train_fn, cfg, out_dir, compute, on_step)`, where
`train_fn(cfg, out_dir, ctx, on_step) -> TrainResult` (a module-level function of the flow) does the
work. With one process it is called here. With N, the stage's Prefect flow stays one process: this module
writes the job (the function's import name, the config, the output dir) to a file and launches N processes of

    python -m flows.launch <job.json> <result.json>

each of which builds its RunContext, takes its slice of every global batch (the same batches as one process
with grad_accum x N micro-batches, so the loss curve matches a single-process run) and calls train_fn; rank 0
alone writes the model, the result file read back here, and the per-step metrics into the stage's MLflow run.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from flows.tracking import metric_prefix
from tasks import config
from tasks.runtime.context import RunContext
from tasks.runtime.device import pick_device, run_context
from tasks.runtime.errors import PipelineError, die_cleanly
from tasks.runtime.result import TrainResult
from tasks.sections.run import ComputeConfig
from tasks.sections.stages import ONLINE_STAGES

CODE_ROOT = Path(__file__).resolve().parent.parent  # where `python -m flows.launch` finds the project's packages


def check_divisible(stage: str, cfg, n: int) -> None:
    """Every process must get an equal slice of each batch (DDP all-reduces once per update), and the
    critic-free stages whole groups of responses (a group's baseline never crosses processes)."""
    if stage in ONLINE_STAGES:
        group = getattr(cfg, "group_size", 1)
        sizes = {"rollout_batch_size": cfg.rollout_batch_size, "minibatch_size": cfg.minibatch_size}
        need, why = n, ""
        if group > 1 and (cfg.rollout_batch_size // group) % n:
            raise PipelineError(
                f"params.yaml: {stage}.rollout_batch_size={cfg.rollout_batch_size} / group_size={group} prompts "
                f"must be a multiple of compute.num_processes={n} (each process samples whole groups)"
            )
    else:
        sizes, need, why = {"batch_size": cfg.batch_size}, n * cfg.grad_accum, f" x {stage}.grad_accum={cfg.grad_accum}"
    for name, size in sizes.items():
        if size % need:
            raise PipelineError(
                f"params.yaml: {stage}.{name}={size} must be a multiple of {need} (compute.num_processes={n}{why})"
            )


def function_name(fn: Callable) -> str:
    """'module:function', importable from a fresh process (a flow run as `python -m flows.x` is __main__ here)."""
    module = fn.__module__
    if module == "__main__":
        module = sys.modules["__main__"].__spec__.name
    return f"{module}:{fn.__qualname__}"


def run(stage: str, train_fn: Callable, cfg, out_dir, compute, on_step: Callable | None = None) -> TrainResult:
    """Train `stage` into out_dir: in this process, or in compute.num_processes launched ones."""
    if compute.num_processes == 1:
        return train_fn(cfg, out_dir, run_context(compute, stage), on_step)
    return launch(stage, train_fn, cfg, out_dir, compute)


def launch(stage: str, train_fn: Callable, cfg, out_dir, compute) -> TrainResult:
    check_divisible(stage, cfg, compute.num_processes)
    job = {
        "stage": stage,
        "function": function_name(train_fn),
        "cfg": cfg.model_dump(mode="json"),
        "compute": compute.model_dump(mode="json"),
        "out_dir": str(out_dir),
    }
    with tempfile.TemporaryDirectory(prefix=f"rlhf-{stage}-") as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(job))
        with socket.socket() as s:  # a free rendezvous port: parallel experiments must not collide
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(compute.num_processes),
            "--num_machines",
            "1",
            "--main_process_port",
            str(port),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
        cmd += ["--config_file", compute.accelerate_config] if compute.accelerate_config else ["--multi_gpu"]
        cmd += ["-m", "flows.launch", str(job_file), str(result_file)]
        pythonpath = os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=pythonpath)
        import mlflow

        if active := mlflow.active_run():  # rank 0 logs the per-step curves into the stage's run
            env.update(RLHF_MLFLOW_RUN_ID=active.info.run_id, MLFLOW_TRACKING_URI=mlflow.get_tracking_uri())
        print(f"{stage}: training in {compute.num_processes} processes: {' '.join(cmd[2:])}", flush=True)
        proc = subprocess.run(cmd, cwd=Path.cwd(), env=env)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{stage}: the {compute.num_processes} training processes failed "
                f"(exit code {proc.returncode}; their output is above)"
            )
        return TrainResult(**json.loads(result_file.read_text()))


def mlflow_step_logger(stage: str) -> Callable | None:
    """Per-step metrics into the MLflow run the launching flow opened (RLHF_MLFLOW_RUN_ID), or None."""
    run_id = os.environ.get("RLHF_MLFLOW_RUN_ID")
    if not run_id:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client, prefix = MlflowClient(), metric_prefix(stage)

    def log(step: int, row: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{prefix}{k}", float(v), now, int(step))
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float))
        ]
        client.log_batch(run_id, metrics=metrics)

    return log


def main() -> None:
    """One of the launched training processes."""
    import torch
    from accelerate import Accelerator

    job_file, result_file = sys.argv[1:3]
    job = json.loads(Path(job_file).read_text())
    compute = ComputeConfig.model_validate(job["compute"])
    cfg = config.section_type(job["stage"]).model_validate(job["cfg"])
    module, name = job["function"].split(":")
    train_fn = getattr(importlib.import_module(module), name)
    accelerator = Accelerator(cpu=compute.device == "cpu" or not torch.cuda.is_available(), mixed_precision="no")
    _, dtype = pick_device(compute, stage=job["stage"])  # our own autocast, as in a single process
    ctx = RunContext(accelerator, str(accelerator.device), dtype)  # this rank's device (cuda:<local rank> on GPUs)
    if ctx.device.startswith("cuda"):
        torch.cuda.set_device(accelerator.device)
    on_step = mlflow_step_logger(job["stage"]) if ctx.is_main else None
    out = train_fn(cfg, job["out_dir"], ctx, on_step)
    if ctx.is_main:
        Path(result_file).write_text(json.dumps(asdict(out), default=float))
    ctx.barrier()
    accelerator.end_training()


if __name__ == "__main__":
    die_cleanly(main)
