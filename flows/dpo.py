"""`dpo` stage: DPO / cDPO / IPO of models/sft on data/comparisons (the RM's pairs) -> models/dpo."""

from flows.common import skipped_early

if __name__ == "__main__" and skipped_early("dpo"):  # left out of pipeline.algorithms: no torch/Prefect import
    raise SystemExit

from prefect import flow, task

from flows.common import read_params, run_stage, skipped, step_logger
from flows.paths import MODELS, PAIRS
from flows.stages import check_batches_split, checkpoint_dir, policy_stage, train_in_processes
from tasks import config
from tasks.runtime.files import read_jsonl
from tasks.train.dpo import train_dpo


def train(cfg, out_dir, ctx, device, dtype, on_step) -> dict:
    """The training itself (one of the training processes): SFT model + labeled pairs -> out_dir."""
    return train_dpo(
        cfg, MODELS / "sft", read_jsonl(PAIRS), out_dir, device, dtype, ctx, on_step, checkpoint_dir("dpo")
    )


@task(name="dpo-train")
def train_task(out_dir: str) -> dict:
    return train_in_processes("dpo", train, out_dir, step_logger("dpo"))


@flow(name="dpo", log_prints=True)
def dpo_flow() -> dict:
    if skipped("dpo"):
        return {}
    cfg = config.load("dpo", read_params())
    variant = "ipo" if cfg.loss_type == "ipo" else ("cdpo" if cfg.label_smoothing > 0 else "dpo")
    return policy_stage(
        "dpo",
        train_task,
        {"algorithm": "dpo", "loss_type": variant, "beta": cfg.beta},
        {"dpo_beta": cfg.beta, "loss_type": cfg.loss_type, "algorithm": "dpo"},
    )


if __name__ == "__main__":
    run_stage(dpo_flow, ("dpo", "sample", "compute", "tracking", "pipeline"), check_batches_split("dpo"))
