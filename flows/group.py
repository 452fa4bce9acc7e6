"""The critic-free policy stages, `grpo` and `rloo`: GRPO / RLOO of models/sft against the reward ->
models/<stage>. `python -m flows.grpo`, `python -m flows.rloo` (DVC runs those) call `main` here."""

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
from tasks.rl.group import train_group


def train_grpo(cfg, out_dir, ctx, device, dtype, on_step) -> dict:
    return train_online(train_group, "grpo", cfg, out_dir, ctx, device, dtype, on_step)


def train_rloo(cfg, out_dir, ctx, device, dtype, on_step) -> dict:
    return train_online(train_group, "rloo", cfg, out_dir, ctx, device, dtype, on_step)


TRAIN = {"grpo": train_grpo, "rloo": train_rloo}  # module-level: the training processes import them by name


def group_flow(stage: str):
    """The stage's Prefect flow: skipped, or trained, logged and registered as a version of '<prefix>-policy'."""

    @task(name=f"{stage}-train")
    def train_task(out_dir: str) -> dict:
        return train_in_processes(stage, TRAIN[stage], out_dir, step_logger(stage))

    @flow(name=stage, log_prints=True)
    def stage_flow() -> dict:
        if skipped(stage):
            return {}
        cfg = config.load(stage, read_params())
        knobs = {"kl_coef": cfg.kl.coef, "group_size": cfg.group_size, "kl_in": cfg.kl_in}
        return policy_stage(
            stage,
            train_task,
            {"algorithm": stage, "beta": cfg.kl.coef, "reward": reward_label(cfg.reward)},
            {**knobs, "reward": reward_label(cfg.reward), "algorithm": stage},
        )

    return stage_flow


def main(stage: str) -> None:
    run_stage(
        group_flow(stage),
        (stage, "ppo", "sample", "compute", "tracking", "pipeline"),
        check_batches_split(stage),
        check_prompt_lengths(stage),
        check_reward(stage),
    )
