"""`sft` stage: supervised fine-tuning of models/base on the demonstrations -> models/sft."""

from prefect import flow, task

from flows.common import finish, read_params, run_stage, stage_run, step_logger
from flows.paths import MODELS, PREPARED
from flows.stages import check_batches_split, checkpoint_dir, register, train_in_processes
from tasks import config
from tasks.data.splits import load_split
from tasks.lm.batching import require_chat_template
from tasks.runtime.device import run_context
from tasks.runtime.files import atomic_path
from tasks.runtime.result import TrainResult
from tasks.train.sft import heldout_loss, train_sft


def train(cfg, out_dir, ctx, on_step) -> TrainResult:
    """The training itself (one of the training processes): base model + demonstrations -> out_dir."""
    demos = load_split(PREPARED, "sft")
    return train_sft(cfg, MODELS / "base", demos, out_dir, ctx, on_step, checkpoint_dir("sft"))


@task(name="held-out loss")
def evaluate(model_dir: str) -> float:
    params = read_params()
    ctx = run_context(config.load("compute", params), "sft")
    return heldout_loss(model_dir, load_split(PREPARED, "sft_val"), config.load("sft", params), ctx)


@task(name="train")
def train_task(out_dir: str) -> list[dict]:
    return train_in_processes("sft", train, out_dir, step_logger("sft")).history


@flow(name="sft", log_prints=True)
def sft_flow() -> dict:
    with stage_run("sft", read_params()):
        base_loss = evaluate(str(MODELS / "base"))
        with atomic_path(MODELS / "sft") as staging:  # models/sft appears only if everything succeeds
            history = train_task(str(staging))
            metrics = {
                "base_heldout_loss": base_loss,
                "heldout_loss": evaluate(str(staging)),
                "train_loss_last": history[-1]["loss"],
                "steps": len(history),
            }
            version = register("sft", str(staging), "lm", metrics)
            finish("sft", metrics, history)
    print(f"sft: held-out loss {base_loss:.4f} (base) -> {metrics['heldout_loss']:.4f}; model version {version}")
    return metrics


def check_chat_data(params: dict) -> None:
    """Conversational demonstrations need the base model's chat template (one line, before any training)."""
    from transformers import AutoTokenizer

    if not (PREPARED / "sft.jsonl").exists() or not (MODELS / "base").is_dir():
        return  # nothing to check yet: the stage's own input checks will say what is missing
    tok = AutoTokenizer.from_pretrained(MODELS / "base")
    for split in ("sft", "sft_val"):
        rows = load_split(PREPARED, split)
        require_chat_template([r["prompt"] for r in rows], tok, f"data/prepared/{split}.jsonl", "models/base")


if __name__ == "__main__":
    run_stage(sft_flow, ("sft", "compute", "tracking"), check_batches_split("sft"), check_chat_data)
