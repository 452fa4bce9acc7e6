"""The one Prefect flow of every policy stage (ppo, dpo, rto, grpo, rloo): skipped, or trained in one or several
processes, logged and registered as a version of '<prefix>-policy' tagged with the algorithm, metrics files.
A stage's module (flows/<stage>.py) gives only its training function and the knobs it logs; run_policy_stage in
flows/entry.py checks the skip before this module (and torch, Prefect) loads."""

from prefect import flow, task

from flows.common import read_params, run_stage, skipped, step_logger
from flows.online import check_reward
from flows.stages import check_batches_split, check_prompt_lengths, policy_stage, train_in_processes
from tasks import config
from tasks.sections.stages import ONLINE_STAGES

SECTIONS = ("sample", "compute", "tracking", "pipeline")  # what every policy stage reads besides its own


def policy_flow(stage: str, train, knobs):
    """The stage's flow: train(cfg, out_dir, ctx, on_step) -> TrainResult does the work (a module-level function:
    launched training processes import it by name); knobs(cfg) -> the MLflow params and tags that tell runs apart."""

    @task(name=f"{stage}-train")
    def train_task(out_dir: str):
        return train_in_processes(stage, train, out_dir, step_logger(stage))

    @flow(name=stage, log_prints=True)
    def stage_flow() -> dict:
        if skipped(stage):
            return {}
        logged = {"algorithm": stage, **knobs(config.load(stage, read_params()))}
        return policy_stage(stage, train_task, logged)

    return stage_flow


def main(stage: str, train, knobs) -> None:
    online = stage in ONLINE_STAGES
    sections = (stage, "ppo", *SECTIONS) if online else (stage, *SECTIONS)
    checks = (check_batches_split(stage), check_prompt_lengths(stage), check_reward(stage))
    run_stage(policy_flow(stage, train, knobs), sections, *(checks if online else checks[:1]))
