"""What the stage flows that read the prepared data and models share: prompts and their length check, training
in one or several processes, logging and registering a model, a skipped stage, the policy-stage frame."""

import json
from pathlib import Path

from prefect import task

from flows import tracking
from flows.common import finish, read_params, stage_run
from flows.launch import check_divisible
from flows.launch import run as run_training
from flows.paths import CHECKPOINTS, MODELS, PREPARED, ROUND, model_dir
from tasks import config
from tasks.data.splits import load_split
from tasks.lm.batching import encode_prompt, require_chat_template
from tasks.lm.models import load_lm, load_scalar_model
from tasks.runtime.errors import PipelineError
from tasks.runtime.files import atomic_path
from tasks.sections.stages import STAGES


def prompts(split: str) -> list:
    """The prompts of a prepared split."""
    return [r["prompt"] for r in load_split(PREPARED, split)]


def texts(split: str) -> list[str]:
    """The texts of a prepared split (pretraining text)."""
    return [r["text"] for r in load_split(PREPARED, split)]


def check_prompt_lengths(stage: str):
    """A preflight: prompts longer than the stage's max_prompt_len tokens are counted and truncated to their
    end (pipeline.prompt_overflow: truncate), or refused with one line (refuse)."""

    def check(params: dict) -> int:
        from transformers import AutoTokenizer

        split, section = STAGES[stage].prompt_split, stage
        if stage == "eval":
            split = config.load("eval", params).split
        if not (PREPARED / f"{split}.jsonl").exists() or not (MODELS / "sft").is_dir():
            return 0  # nothing to check yet: the stage's own input checks will say what is missing
        limit = config.load(section, params).max_prompt_len
        tok = AutoTokenizer.from_pretrained(MODELS / "sft")
        split_prompts = prompts(split)
        require_chat_template(split_prompts, tok, f"data/prepared/{split}.jsonl", "models/sft")
        n = sum(len(encode_prompt(p, tok)) > limit for p in split_prompts)
        if n and config.load("pipeline", params).prompt_overflow == "refuse":
            raise PipelineError(
                f"data/prepared/{split}.jsonl: {n} prompt(s) longer than {section}.max_prompt_len="
                f"{limit} tokens (pipeline.prompt_overflow is 'refuse'; 'truncate' keeps their end)"
            )
        if n:
            print(
                f"{stage}: {n} prompt(s) of the {split} split are longer than {limit} tokens; keeping their last "
                f"{limit} tokens (pipeline.prompt_overflow: truncate)"
            )
        return n

    return check


def check_batches_split(stage: str):
    """A preflight: with several training processes, every batch must split evenly over them."""

    def check(params: dict) -> None:
        compute = config.load("compute", params)
        if compute.num_processes > 1:
            check_divisible(stage, config.load(stage, params), compute.num_processes)

    return check


@task(name="log-and-register")
def register(
    stage: str, model_dir: str, kind: str, metrics: dict, tags: dict | None = None, name: str | None = None
) -> str | None:
    """Log the model in model_dir to the active MLflow run; register it as '<prefix>-<name or stage>'."""
    trk = config.load("tracking", read_params())
    if kind == "reward":
        model, tok = load_scalar_model(model_dir)
        task_name = "text-classification"
    else:
        model, tok = load_lm(model_dir)
        task_name = "text-generation"
    registered = f"{trk.registered_prefix}-{name or stage}" if trk.register_models else None
    size = sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file())
    return tracking.log_model(
        model, tok, task_name, registered, tags={"stage": stage, "round": ROUND, **(tags or {}), **metrics}, nbytes=size
    )


def train_in_processes(stage: str, train_fn, out_dir: str, on_step) -> dict:
    """The stage's training (train_fn) with its params.yaml section, in compute.num_processes processes."""
    params = read_params()
    return run_training(stage, train_fn, config.load(stage, params), out_dir, config.load("compute", params), on_step)


def checkpoint_dir(stage: str):
    return CHECKPOINTS / stage


def policy_stage(stage: str, train_task, log_params: dict) -> dict:
    """What every policy stage does around its training: MLflow run, atomic output, registration as a
    version of '<prefix>-policy' tagged with the algorithm, metrics files. Held-out evaluation against
    SFT is the eval stage's job (SFT samples once for every policy there)."""
    import mlflow

    params = read_params()
    trk = config.load("tracking", params)
    with stage_run(stage, params) as run:
        mlflow.log_params(log_params)
        tags = {k: v for k, v in log_params.items() if k in ("algorithm", "kl_coef", "variant", "reward")}
        mlflow.set_tags(tags)
        with atomic_path(model_dir(stage)) as staging:
            out = train_task(str(staging))
            metrics = out.metrics
            version = register(stage, str(staging), "lm", metrics, tags=tags, name="policy")
            registered = f"{trk.registered_prefix}-policy" if version else None
            run_file = {
                "run_id": run.info.run_id,
                "experiment": trk.experiment,
                "version": version,
                "registered_model": registered,
                **log_params,
            }
            (staging / tracking.RUN_FILE).write_text(json.dumps(run_file))
            finish(stage, metrics, out.history)
    print(f"{stage}: {metrics}")
    return metrics
