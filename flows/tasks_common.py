"""Prefect tasks more than one stage flow uses."""
from prefect import task

from tasks import config, tracking


@task(name="log-and-register")
def register(stage: str, model_dir: str, kind: str, metrics: dict, tags: dict | None = None,
             name: str | None = None) -> str | None:
    """Log the model in model_dir to the active MLflow run; register it as '<prefix>-<name or stage>'."""
    trk = config.load("tracking")
    if kind == "reward":
        from tasks.reward import load_scalar_model

        model, tok = load_scalar_model(model_dir)
        task_name = "text-classification"
    else:
        from tasks.sft import load_lm

        model, tok = load_lm(model_dir)
        task_name = "text-generation"
    registered = f"{trk.registered_prefix}-{name or stage}" if trk.register_models else None
    return tracking.log_model(model, tok, task_name, registered, tags={"stage": stage, **(tags or {}), **metrics})


@task(name="evaluate-vs-sft")
def evaluate(policy_dir: str) -> dict:
    """Held-out metrics of the policy (and of SFT, prefixed sft_) for the metrics file and MLflow."""
    from flows.common import MODELS
    from tasks.common import pick_device
    from tasks.evaluate import evaluate_policy

    params = config.read_params()
    res = evaluate_policy(policy_dir, MODELS / "sft", MODELS / "rm", config.load("eval", params),
                          config.load("sample", params).gold_scorer, *pick_device(config.load("compute", params)))
    return {**res["policy"], **{f"sft_{k}": v for k, v in res["sft"].items()
                                if k in ("gold_reward", "rm_score", "perplexity", "response_length", "no_eos_rate")}}
