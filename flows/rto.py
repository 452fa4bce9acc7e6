"""`rto` stage: PPO with the dpo model's token-wise implicit reward added (RTO) -> models/rto."""

from flows.common import skipped_early

if __name__ == "__main__" and skipped_early("rto"):  # left out of pipeline.algorithms: no torch/Prefect import
    raise SystemExit

from prefect import flow, task

from flows.common import read_params, run_stage, skipped, step_logger
from flows.online import check_reward, reward_label, train_online
from flows.paths import MODELS
from flows.stages import (
    check_batches_split,
    check_prompt_lengths,
    policy_stage,
    train_in_processes,
)
from tasks import config
from tasks.rl.rto import train_rto


def train(cfg, out_dir, ctx, device, dtype, on_step) -> dict:
    """The training itself (one of the training processes): SFT, RM and DPO models, policy prompts -> out_dir."""
    return train_online(train_rto, "rto", cfg, out_dir, ctx, device, dtype, on_step, dpo_dir=MODELS / "dpo")


@task(name="rto-train")
def train_task(out_dir: str) -> dict:
    return train_in_processes("rto", train, out_dir, step_logger("rto"))


@flow(name="rto", log_prints=True)
def rto_flow() -> dict:
    if skipped("rto"):
        return {}
    cfg = config.load("rto", read_params())
    return policy_stage(
        "rto",
        train_task,
        {"algorithm": "rto", "beta": cfg.kl.coef, "token_beta": cfg.token_beta, "reward": reward_label(cfg.reward)},
        {
            "kl_coef": cfg.kl.coef,
            "token_beta": cfg.token_beta,
            "token_clip": cfg.token_clip,
            "algorithm": "rto",
            "reward": reward_label(cfg.reward),
        },
    )


if __name__ == "__main__":
    run_stage(
        rto_flow,
        ("rto", "sample", "compute", "tracking", "pipeline"),
        check_batches_split("rto"),
        check_prompt_lengths("rto"),
        check_reward("rto"),
    )
