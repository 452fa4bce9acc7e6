"""Loading and shaping the models every stage trains: a causal LM, a scalar-head model (reward model and
critic), dropout off, LoRA on and merged back. Weights are always read as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.context import SINGLE_PROCESS, DistContext


def load_lm(path: Path, device: str = "cpu"):
    """(causal LM in fp32, tokenizer) from a model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True).to(device)
    return model, tok


def load_scalar_model(path: Path, device: str = "cpu"):
    """(sequence classifier with one output in fp32, tokenizer): the reward model, or the critic it starts."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype="float32", use_safetensors=True
    )
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device), tok


def disable_dropout(model) -> None:
    """RLHF practice: no dropout anywhere, so log-probs of the same tokens are deterministic."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        cfg = getattr(m, "config", None)  # attention dropout is functional: it reads the config
        for k, v in (vars(cfg) if hasattr(cfg, "__dict__") else {}).items():
            if "dropout" in k and isinstance(v, float):
                setattr(cfg, k, 0.0)


def add_lora(model, lora_cfg, task_type: str = "CAUSAL_LM"):
    """Wrap with a peft LoRA adapter when asked; returns the (possibly wrapped) model."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model,
        LoraConfig(
            r=lora_cfg.r,
            lora_alpha=lora_cfg.alpha,
            lora_dropout=0.0,
            target_modules=lora_cfg.target_modules,
            task_type=task_type,
        ),
    )


def merged(model):
    """A plain transformers model: LoRA adapters merged into the weights (what models/<stage> stores)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_pretrained(model, tok, out_dir, ctx: DistContext = SINGLE_PROCESS) -> None:
    """A stage's model: safetensors + tokenizer, written by rank 0 alone when several processes train."""
    if ctx.is_main:
        model.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)
