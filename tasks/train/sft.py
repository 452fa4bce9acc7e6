"""The `sft` stage's work: supervised fine-tuning on demonstrations, loss on completion tokens only."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tasks.lm.batching import collate, encode_example
from tasks.lm.models import add_lora, load_lm, merged, save_pretrained
from tasks.losses import sft_loss
from tasks.runtime.context import SINGLE_PROCESS, RunContext
from tasks.runtime.device import seed_everything
from tasks.runtime.result import TrainResult
from tasks.train.loop import fit, heldout_nll


def encode_demos(demos: list[dict], tok, max_length: int) -> list[dict]:
    """Prompt/completion records as token ids with the prompt masked out of the labels."""
    return [encode_example(r["prompt"], r["completion"], tok, max_length) for r in demos]


def lm_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sft_loss(logits, batch["labels"]), {}


def heldout_loss(model_dir: Path, demos: list[dict], cfg, ctx: RunContext) -> float:
    """Per-token NLL of held-out demonstrations' completions under the model in model_dir."""
    model, tok = load_lm(model_dir, ctx.device)
    held = encode_demos(demos, tok, cfg.max_length)[: cfg.heldout_max_examples]
    return heldout_nll(model, held, partial(collate, pad_id=tok.pad_token_id), cfg.eval_batch_size, ctx)


def train_sft(
    cfg,
    base_dir: Path,
    demos: list[dict],
    out_dir: Path,
    ctx: RunContext = SINGLE_PROCESS,
    on_step=None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Fine-tune the model in base_dir on demos; save the result (LoRA merged) to out_dir."""
    seed_everything(cfg.seed)
    model, tok = load_lm(base_dir, ctx.device)
    train = encode_demos(demos, tok, cfg.max_length)
    model = add_lora(model, cfg.lora)
    history = fit(
        model,
        train,
        partial(collate, pad_id=tok.pad_token_id),
        lm_loss,
        cfg,
        ctx,
        stage="sft",
        hooks={"on_step": on_step, "checkpoint_dir": checkpoint_dir},
    )
    save_pretrained(merged(model), tok, out_dir, ctx)
    return TrainResult(str(out_dir), history, {"train_loss_last": history[-1]["loss"], "steps": len(history)})
