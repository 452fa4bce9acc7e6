"""Loading and shaping the models every stage trains: a causal LM, a scalar-head model (reward model and
critic), dropout off, LoRA on and merged back. Weights are always read as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.context import SINGLE_PROCESS, DistContext


class FP32Linear(torch.nn.Linear):
    """A linear layer that computes in fp32 even under bf16 autocast.

    Used for the heads whose outputs become log-probs, rewards and values: bf16 keeps 8 bits of mantissa,
    so a logit of 16 would be off by up to 0.06, a log-prob error that PPO's ratio and the KL would carry.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return torch.nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias)


def fp32_heads(model):
    """Make the LM head and a scalar head (`score`) FP32Linear in place; the weights and their names stay."""
    heads = [model.get_output_embeddings(), getattr(model, "score", None)]
    for head in heads:
        if type(head) is torch.nn.Linear:  # a LoRA-wrapped or quantized head is left as it is
            head.__class__ = FP32Linear
    return model


def load_lm(path: Path, device: str = "cpu"):
    """(causal LM in fp32 with an fp32 head, tokenizer) from a model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True).to(device)
    return fp32_heads(model), tok


def load_scalar_model(path: Path, device: str = "cpu"):
    """(sequence classifier with one output in fp32 and an fp32 head, tokenizer): the reward model, or the critic."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype="float32", use_safetensors=True
    )
    model.config.pad_token_id = tok.pad_token_id
    return fp32_heads(model.to(device)), tok


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


def sampling_copy(model, precision: str):
    """The model that draws PPO/RTO rollouts: the policy itself (fp32) or a copy with bf16 weights.

    Only the sampling distribution moves: the update recomputes every log-prob it trains on with the fp32
    policy, so a slightly different sampler makes the first minibatch's ratio differ from 1 by that much
    (tests/test_generation.py bounds the per-token KL between the two). No int8 choice: PyTorch's dynamic
    int8 quantization (activations quantized per tensor) put SmolLM2's sampler ~2 nats/token from the
    policy (docs/results.md), far outside that bound.
    """
    if precision == "fp32":
        return model
    import copy

    clone = copy.deepcopy(merged(getattr(model, "module", model))).eval().requires_grad_(False)
    for m in clone.modules():  # the copy samples; its head need not be fp32
        if type(m) is FP32Linear:
            m.__class__ = torch.nn.Linear
    return clone.to(torch.bfloat16)
