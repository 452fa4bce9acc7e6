"""What the online policy stages (ppo, rto, grpo, rloo) share beyond flows/stages.py: their reward's check
before any work, and its label in MLflow."""

from flows.paths import MODELS
from tasks import config
from tasks.common import PipelineError
from tasks.rewards import load_functions, needs_rm


def reward_label(spec: dict[str, float]) -> str:
    """'rm', or 'rm + 0.5*my.module:fn': the reward as one MLflow param / tag."""
    return " + ".join(name if w == 1 else f"{w:g}*{name}" for name, w in spec.items())


def check_reward(stage: str):
    """A preflight: the stage's reward functions import, and the RM it names was trained."""

    def check(params: dict) -> None:
        if stage not in config.load("pipeline", params).algorithms:
            return
        spec = config.load(stage, params).reward
        load_functions(spec, stage)
        if needs_rm(spec) and (MODELS / "rm" / "SKIPPED").exists():
            raise PipelineError(
                f"params.yaml: {stage}.reward uses rm, but models/rm records 'skipped': run dvc repro rm"
            )

    return check
