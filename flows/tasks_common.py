"""Prefect tasks more than one stage flow uses."""
from prefect import task

from tasks import config, tracking


@task(name="log-and-register")
def register(stage: str, model_dir: str, kind: str, metrics: dict, tags: dict | None = None) -> str | None:
    """Log the model in model_dir to the active MLflow run; register it as '<prefix>-<stage>'."""
    trk = config.load("tracking")
    if kind == "reward":
        from tasks.reward import load_scalar_model

        model, tok = load_scalar_model(model_dir)
        task_name = "text-classification"
    else:
        from tasks.sft import load_lm

        model, tok = load_lm(model_dir)
        task_name = "text-generation"
    name = f"{trk.registered_prefix}-{stage}" if trk.register_models else None
    return tracking.log_model(model, tok, task_name, name, tags={"stage": stage, **(tags or {}), **metrics})
