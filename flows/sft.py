"""`sft` stage: supervised fine-tuning of models/base on the demonstrations -> models/sft."""
from prefect import flow, task

from flows.common import MODELS, run_stage, write_metrics, write_steps
from tasks import config, tracking
from tasks.common import atomic_path, pick_device
from tasks.sft import heldout_loss, load_lm, train_sft


@task(name="held-out loss")
def evaluate(model_dir: str) -> float:
    cfg, device_dtype = config.load("sft"), pick_device(config.load("compute"))
    return heldout_loss(model_dir, cfg, *device_dtype)


@task(name="train")
def train(out_dir: str) -> list[dict]:
    cfg, device_dtype = config.load("sft"), pick_device(config.load("compute"))
    log = lambda step, row: tracking.log_history([row], prefix="train/")  # noqa: E731 - live loss curve
    return train_sft(cfg, MODELS / "base", out_dir, *device_dtype, on_step=log)


@task(name="log-and-register")
def register(model_dir: str, metrics: dict) -> str | None:
    trk = config.load("tracking")
    model, tok = load_lm(model_dir)
    name = f"{trk.registered_prefix}-sft" if trk.register_models else None
    return tracking.log_model(model, tok, "text-generation", name, tags={"stage": "sft", **metrics})


@flow(name="sft", log_prints=True)
def sft_flow() -> dict:
    params = config.read_params()
    cfg, trk = config.load("sft", params), config.load("tracking", params)
    with tracking.stage_run("sft", trk.experiment, {"sft": cfg.model_dump(), "compute": params["compute"]}):
        base_loss = evaluate(str(MODELS / "base"))
        with atomic_path(MODELS / "sft") as staging:
            history = train(str(staging))
            metrics = {"base_heldout_loss": base_loss, "heldout_loss": evaluate(str(staging)),
                       "train_loss_last": history[-1]["loss"], "steps": len(history)}
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            version = register(str(staging), metrics)
            write_steps("sft", history)
            write_metrics("sft", metrics)
    print(f"sft: held-out loss {base_loss:.4f} (base) -> {metrics['heldout_loss']:.4f}; model version {version}")
    return metrics


if __name__ == "__main__":
    run_stage(sft_flow, ("sft", "compute", "tracking"))
