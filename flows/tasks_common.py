"""Prefect tasks more than one stage flow uses."""
import json

from prefect import task

from tasks import config, tracking

RUN_FILE = "mlflow_run.json"  # in a policy's model dir: its training run and registered version (eval uses it)


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


def skipped(stage: str) -> bool:
    """True (and a 'skipped' marker output + metrics) when pipeline.algorithms leaves this stage out."""
    from flows.common import MODELS, write_metrics, write_steps
    from tasks.common import atomic_path

    if stage in config.load("pipeline").algorithms:
        return False
    with atomic_path(MODELS / stage) as staging:
        staging.mkdir()
        (staging / "SKIPPED").write_text(f"{stage} is not in pipeline.algorithms\n")
    write_metrics(stage, {"skipped": 1})
    write_steps(stage, [])  # its plots output exists too, or DVC refuses the stage
    print(f"{stage}: skipped (not in pipeline.algorithms)")
    return True


def policy_stage(stage: str, train_task, tags: dict, log_params: dict) -> dict:
    """What every policy stage does around its training: MLflow run, atomic output, registration as a
    version of '<prefix>-policy' tagged with the algorithm, metrics files. Held-out evaluation against
    SFT is the eval stage's job (SFT samples once for every policy there)."""
    import mlflow

    from flows.common import MODELS, finish, stage_params
    from tasks.common import atomic_path

    params = config.read_params()
    trk = config.load("tracking", params)
    with tracking.stage_run(stage, trk.experiment, stage_params(params, stage, "compute")) as run:
        mlflow.log_params(log_params)
        mlflow.set_tags(tags)
        with atomic_path(MODELS / stage) as staging:
            out = train_task(str(staging))
            metrics = out["metrics"]
            version = register(stage, str(staging), "lm", metrics, tags=tags, name="policy")
            (staging / RUN_FILE).write_text(json.dumps({
                "run_id": run.info.run_id, "experiment": trk.experiment, "version": version,
                "registered_model": f"{trk.registered_prefix}-policy" if version else None, **log_params}))
            finish(stage, metrics, out["history"])
    print(f"{stage}: {metrics}")
    return metrics
