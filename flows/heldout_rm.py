"""`heldout_rm` stage: a second reward model, trained like `rm` (its section's values) but only on the held-out
share of the comparisons (data/comparisons/heldout.jsonl: eval.heldout_share of the prompts, which rm and dpo
never see) -> models/heldout_rm. Eval's `heldout_rm` judge: a judge no policy optimized (Gao et al. 2023 hold a
gold RM apart from the proxy the same way). Its held-out accuracy is on its own validation prompts (rm.heldout_frac
of the held-out share). Skipped when heldout_rm is not among eval.judges."""

from prefect import flow, task

from flows.common import finish, read_params, run_stage, skip, stage_run, step_logger
from flows.launch import run as run_training
from flows.paths import HELDOUT_PAIRS, MODELS
from flows.stages import check_batches_split, checkpoint_dir, register
from tasks import config
from tasks.runtime.files import atomic_path, read_jsonl
from tasks.runtime.result import TrainResult
from tasks.train.reward_model import train_rm

STAGE = "heldout_rm"


def train(cfg, out_dir, ctx, on_step) -> TrainResult:
    """The training itself (one of the training processes): SFT model + the held-out pairs -> out_dir."""
    return train_rm(cfg, MODELS / "sft", read_jsonl(HELDOUT_PAIRS), out_dir, ctx, on_step, checkpoint_dir(STAGE))


@task(name="train-and-normalize")
def train_task(out_dir: str) -> TrainResult:
    params = read_params()
    rm_cfg, compute = config.load("rm", params), config.load("compute", params)
    return run_training(STAGE, train, rm_cfg, out_dir, compute, step_logger(STAGE))


@flow(name=STAGE, log_prints=True)
def heldout_rm_flow() -> dict:
    if STAGE not in config.judges(read_params()):
        skip(STAGE, "heldout_rm is not among eval.judges")
        return {}
    with stage_run(STAGE, read_params(), "rm"), atomic_path(MODELS / STAGE) as staging:
        out = train_task(str(staging))
        register(STAGE, str(staging), "reward", out.metrics)
        finish(STAGE, out.metrics, out.history)
    print(f"{STAGE}: {out.metrics}")
    return out.metrics


if __name__ == "__main__":
    run_stage(heldout_rm_flow, ("rm", "eval", "sample", "compute", "tracking"), check_batches_split("rm"))
