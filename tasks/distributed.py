"""Multi-process training on Accelerate: `compute.num_processes > 1` runs a stage's training under
`accelerate launch` (DDP by default: gloo on CPU, NCCL on GPUs; FSDP, DeepSpeed or several machines
through an accelerate config file in `compute.accelerate_config`).

The stage's Prefect flow stays one process: its training task launches the N training processes and
waits. Each process takes its slice of every global batch (the same batches as one process with
grad_accum x N micro-batches, so the loss curve matches a single-process run); rank 0 alone writes the
model, the result file the flow reads back, and the per-step metrics into the stage's MLflow run.

    python -m tasks.distributed <stage> <out_dir> <result.json>     (what `accelerate launch` runs)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from tasks import config
from tasks.common import ROOT, PipelineError, die_cleanly, pick_device

MODELS = ROOT / "models"
_ACC = None  # the Accelerator of a launched training process (None: the usual single process)


def accelerator():
    """The running Accelerator when this process is one of several training processes, else None."""
    return _ACC


def rank_and_world() -> tuple[int, int]:
    return (_ACC.process_index, _ACC.num_processes) if _ACC else (0, 1)


def is_main() -> bool:
    """Only rank 0 writes outputs and logs (always true in a single process)."""
    return _ACC is None or _ACC.is_main_process


def barrier() -> None:
    if _ACC:
        _ACC.wait_for_everyone()


def all_sum(t):
    """A tensor summed over the training processes (itself in a single process)."""
    return _ACC.reduce(t, "sum") if _ACC else t


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean of each float metric over the training processes (ints such as the step are kept as they
    are; identity in a single process)."""
    if not _ACC:
        return values
    import torch

    keys = sorted(k for k, v in values.items() if isinstance(v, float))
    t = _ACC.reduce(torch.tensor([values[k] for k in keys], device=_ACC.device), "mean")
    return {**values, **dict(zip(keys, t.tolist()))}


# ---------------------------------------------------------------- what each stage trains
def _sft(out_dir, device, dtype, on_step):
    from tasks.sft import train_sft

    return {"history": train_sft(config.load("sft"), MODELS / "base", out_dir, device, dtype, on_step=on_step)}


def _rm(out_dir, device, dtype, on_step):
    from tasks.reward import train_rm

    return train_rm(config.load("rm"), MODELS / "sft", ROOT / "data/comparisons/pairs.jsonl", out_dir, device,
                    dtype, on_step=on_step)


def _dpo(out_dir, device, dtype, on_step):
    from tasks.dpo import train_dpo

    return train_dpo(config.load("dpo"), MODELS / "sft", ROOT / "data/comparisons/pairs.jsonl", out_dir, device,
                     dtype, on_step=on_step)


def _policy(stage):
    def run(out_dir, device, dtype, on_step):
        from tasks.gold import load_scorer
        from tasks.ppo import save_policy, train_ppo
        from tasks.rto import train_rto

        cfg, gold = config.load(stage), load_scorer(config.load("sample").gold_scorer)
        if stage == "rto":
            pol, history = train_rto(cfg, MODELS / "sft", MODELS / "rm", MODELS / "dpo", device, dtype, gold, on_step)
        else:
            pol, history = train_ppo(cfg, MODELS / "sft", MODELS / "rm", device, dtype, gold, on_iter=on_step)
        return save_policy(pol, history, cfg, out_dir)
    return run


STAGES: dict[str, Callable] = {"sft": _sft, "rm": _rm, "dpo": _dpo, "ppo": _policy("ppo"), "rto": _policy("rto")}


def check_divisible(stage: str, n: int) -> None:
    """Every process must get an equal slice of each batch (DDP all-reduces once per update)."""
    cfg = config.load(stage)
    if stage in ("ppo", "rto"):
        sizes, need, why = {"rollout_batch_size": cfg.rollout_batch_size, "minibatch_size": cfg.minibatch_size}, n, ""
    else:
        sizes, need, why = {"batch_size": cfg.batch_size}, n * cfg.grad_accum, f" x {stage}.grad_accum={cfg.grad_accum}"
    for name, size in sizes.items():
        if size % need:
            raise PipelineError(f"params.yaml: {stage}.{name}={size} must be a multiple of {need} "
                                f"(compute.num_processes={n}{why})")


def train(stage: str, out_dir: str, on_step: Callable | None = None) -> dict:
    """Train `stage` into out_dir: in this process, or in compute.num_processes launched ones."""
    compute = config.load("compute")
    if compute.num_processes == 1:
        return STAGES[stage](out_dir, *pick_device(compute), on_step)
    return launch(stage, out_dir, compute)


def launch(stage: str, out_dir: str, compute) -> dict:
    import socket

    check_divisible(stage, compute.num_processes)
    result = Path(out_dir).with_name(f".{stage}-result.json")
    with socket.socket() as s:  # a free rendezvous port: parallel experiments must not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(compute.num_processes),
           "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
           "--dynamo_backend", "no"]
    cmd += ["--config_file", compute.accelerate_config] if compute.accelerate_config else ["--multi_gpu"]
    cmd += ["-m", "tasks.distributed", stage, str(out_dir), str(result)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        import mlflow

        if run := mlflow.active_run():  # rank 0 logs the per-step curves into the stage's run
            env.update(RLHF_MLFLOW_RUN_ID=run.info.run_id, MLFLOW_TRACKING_URI=mlflow.get_tracking_uri())
    except ImportError:
        pass
    print(f"{stage}: training in {compute.num_processes} processes: {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"{stage}: the {compute.num_processes} training processes failed "
                               f"(exit code {proc.returncode}; their output is above)")
        return json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)


def _mlflow_logger(prefix: str) -> Callable | None:
    run_id = os.environ.get("RLHF_MLFLOW_RUN_ID")
    if not run_id:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    import time

    client = MlflowClient()

    def log(step: int, row: dict) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(f"{prefix}{k}", float(v), now, int(step))
                                          for k, v in row.items() if k != "step" and isinstance(v, (int, float))])
    return log


def main() -> None:
    import torch
    from accelerate import Accelerator

    global _ACC
    stage, out_dir, result = sys.argv[1:4]
    compute = config.load("compute")
    _ACC = Accelerator(cpu=compute.device == "cpu" or not torch.cuda.is_available(), mixed_precision="no")
    _, dtype = pick_device(compute)     # our own autocast, as in a single process
    device = str(_ACC.device)           # this rank's device (cuda:<local rank> on GPUs)
    if device.startswith("cuda"):
        torch.cuda.set_device(_ACC.device)
    on_step = _mlflow_logger("train/" if stage in ("sft", "rm", "dpo") else f"{stage}/") if is_main() else None
    out = STAGES[stage](out_dir, device, dtype, on_step)
    if is_main():
        Path(result).write_text(json.dumps(out, default=float))
    barrier()
    _ACC.end_training()


if __name__ == "__main__":
    # run the imported module's main: its _ACC is the one tasks.train, tasks.ppo, ... see (not __main__'s)
    from tasks.distributed import main as imported_main

    die_cleanly(imported_main)
