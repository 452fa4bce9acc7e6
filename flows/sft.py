"""`sft` stage: supervised fine-tuning of models/base on the demonstrations -> models/sft."""
from prefect import flow, task

from flows.common import MODELS, finish, log_step, run_stage, stage_params
from flows.tasks_common import register
from tasks import config, distributed, tracking
from tasks.common import atomic_path, pick_device
from tasks.sft import heldout_loss


@task(name="held-out loss")
def evaluate(model_dir: str) -> float:
    return heldout_loss(model_dir, config.load("sft"), *pick_device(config.load("compute")))


@task(name="train")
def train(out_dir: str) -> list[dict]:
    return distributed.train("sft", out_dir, log_step)["history"]


@flow(name="sft", log_prints=True)
def sft_flow() -> dict:
    params = config.read_params()
    trk = config.load("tracking", params)
    with tracking.stage_run("sft", trk.experiment, stage_params(params, "sft", "compute")):
        base_loss = evaluate(str(MODELS / "base"))
        with atomic_path(MODELS / "sft") as staging:   # models/sft appears only if everything succeeds
            history = train(str(staging))
            metrics = {"base_heldout_loss": base_loss, "heldout_loss": evaluate(str(staging)),
                       "train_loss_last": history[-1]["loss"], "steps": len(history)}
            version = register("sft", str(staging), "lm", metrics)
            finish("sft", metrics, history)
    print(f"sft: held-out loss {base_loss:.4f} (base) -> {metrics['heldout_loss']:.4f}; model version {version}")
    return metrics


if __name__ == "__main__":
    run_stage(sft_flow, ("sft", "compute", "tracking"))
