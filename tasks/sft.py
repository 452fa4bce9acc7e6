"""The `sft` stage's work: supervised fine-tuning on demonstrations, loss on completion tokens only."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from tasks.batching import collate, encode_example
from tasks.common import seed_everything
from tasks.data import load_split
from tasks.losses import sft_loss
from tasks.train import add_lora, fit, heldout_nll, merged, save_pretrained


def load_lm(path: Path, device: str = "cpu"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True).to(device)
    return model, tok


def encoded_split(name: str, tok, max_length: int) -> list[dict]:
    return [encode_example(r["prompt"], r["completion"], tok, max_length) for r in load_split(name)]


def lm_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sft_loss(logits, batch["labels"]), {}


def heldout_loss(model_dir: Path, cfg, device: str, dtype) -> float:
    """Per-token NLL of the held-out demonstrations' completions under the model in model_dir."""
    model, tok = load_lm(model_dir, device)
    val = encoded_split("sft_val", tok, cfg.max_length)[: cfg.heldout_max_examples]
    return heldout_nll(model, val, partial(collate, pad_id=tok.pad_token_id), cfg.eval_batch_size, device, dtype)


def train_sft(cfg, base_dir: Path, out_dir: Path, device: str, dtype, on_step=None) -> list[dict]:
    """Fine-tune the model in base_dir; save the result (LoRA merged) to out_dir; return the step history."""
    seed_everything(cfg.seed)
    model, tok = load_lm(base_dir, device)
    train = encoded_split("sft", tok, cfg.max_length)
    model = add_lora(model, cfg.lora)
    history = fit(model, train, partial(collate, pad_id=tok.pad_token_id), lm_loss, cfg, device, dtype,
                  on_step=on_step, desc="sft")
    save_pretrained(merged(model), tok, out_dir)
    return history
