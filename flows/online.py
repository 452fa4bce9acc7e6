"""What the online policy stages (ppo, rto, grpo, rloo) share beyond flows/stages.py: their inputs and
output around the trainer, their reward's check before any work, and its label in MLflow."""

from flows.common import read_params
from flows.paths import MODELS, model_dir
from flows.round_inputs import policy_start
from flows.stages import checkpoint_dir, prompts, texts
from tasks import config
from tasks.label.gold import load_scorer
from tasks.rl.monitor import HeldoutJudges
from tasks.rl.ppo import OnlineInputs
from tasks.rl.reward_spec import load_functions, needs_rm
from tasks.runtime.errors import PipelineError
from tasks.runtime.result import TrainResult


def train_online(fit, stage: str, cfg, out_dir, ctx, on_step, **extra) -> TrainResult:
    """One training process of an online stage: fit(cfg, OnlineInputs, out_dir, ctx, ...) from tasks/rl, its
    checkpoints in .checkpoints/<stage>, the policy -> out_dir."""
    sample = config.load("sample", read_params())
    gold = load_scorer(sample.gold_scorer) if sample.labeler == "simulated" else None  # the gold that labeled
    monitor = HeldoutJudges(gold, MODELS / "heldout_rm", ctx)  # the held-out RM where its stage trained one
    start = policy_start(stage, read_params())
    inputs = OnlineInputs(prompts("policy"), texts("pretrain"), MODELS / "sft", model_dir("rm"), start)
    hooks = {"on_iter": on_step, "checkpoint_dir": checkpoint_dir(stage)}
    return fit(cfg, inputs, out_dir, ctx, stage=stage, monitor=monitor or None, hooks=hooks, **extra)


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
        if needs_rm(spec) and (model_dir("rm") / "SKIPPED").exists():
            raise PipelineError(
                f"params.yaml: {stage}.reward uses rm, but models/rm records 'skipped': run dvc repro rm"
            )

    return check
