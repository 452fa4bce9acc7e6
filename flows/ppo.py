"""`ppo` stage: PPO-ptx (PPO when ppo.ptx_coef = 0) of models/sft against models/rm -> models/ppo."""

from flows.common import skipped_early

if __name__ == "__main__" and skipped_early("ppo"):  # left out of pipeline.algorithms: no torch/Prefect import
    raise SystemExit

from prefect import flow, task

from flows.common import read_params, run_stage, skipped, step_logger
from flows.online import check_reward, reward_label, train_online
from flows.stages import (
    check_batches_split,
    check_prompt_lengths,
    policy_stage,
    train_in_processes,
)
from tasks import config
from tasks.rl.ppo import train_ppo


def train(cfg, out_dir, ctx, device, dtype, on_step) -> dict:
    """The training itself (one of the training processes): SFT model, RM, policy prompts -> out_dir."""
    return train_online(train_ppo, "ppo", cfg, out_dir, ctx, device, dtype, on_step)


@task(name="ppo-train")
def train_task(out_dir: str) -> dict:
    return train_in_processes("ppo", train, out_dir, step_logger("ppo"))


@flow(name="ppo", log_prints=True)
def ppo_flow() -> dict:
    if skipped("ppo"):
        return {}
    cfg = config.load("ppo", read_params())
    algo = "ppo-ptx" if cfg.ptx_coef > 0 else "ppo"
    return policy_stage(
        "ppo",
        train_task,
        {"algorithm": algo, "beta": cfg.kl.coef, "gamma": cfg.ptx_coef, "reward": reward_label(cfg.reward)},
        {"kl_coef": cfg.kl.coef, "ptx_gamma": cfg.ptx_coef, "algorithm": algo, "reward": reward_label(cfg.reward)},
    )


if __name__ == "__main__":
    run_stage(
        ppo_flow,
        ("ppo", "sample", "compute", "tracking", "pipeline"),
        check_batches_split("ppo"),
        check_prompt_lengths("ppo"),
        check_reward("ppo"),
    )
