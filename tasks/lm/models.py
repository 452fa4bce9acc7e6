"""Loading and shaping the models every stage trains: a causal LM, a scalar-head model (reward model and
critic), dropout off, LoRA on and merged back. Weights are always read as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.runtime.context import SINGLE_PROCESS, RunContext


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


def save_pretrained(model, tok, out_dir, ctx: RunContext = SINGLE_PROCESS) -> None:
    """A stage's model: safetensors + tokenizer, written by rank 0 alone when several processes train."""
    if ctx.is_main:
        model.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weight-only quantization per output channel of a (out, in) weight W:
        s_i = max_j |W_ij| / 127,   Q_ij = round(W_ij / s_i) in [-127, 127],   W ~ Q * s[:, None]
    (each entry off by at most s_i / 2). Returns (Q int8 (out, in), s float32 (out,)).
    """
    scale = weight.float().abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(weight.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8WeightLinear(torch.nn.Module):
    """y = x (Q * s)^T + b with int8 weights and a bf16 scale per output row; the activations stay bf16.

    Weight-only: the activations keep their outliers, which PyTorch's dynamic int8 (activations quantized
    per tensor) lost. On CPU the product is PyTorch's int8 weight kernel, which needs an input width that
    is a multiple of 16; other widths (and other devices) multiply by the dequantized weight instead.
    """

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        q, scale = int8_per_channel(linear.weight.detach())
        self.register_buffer("weight_int8", q.contiguous())
        self.register_buffer("scale", scale.to(torch.bfloat16))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        if flat.device.type == "cpu" and self.in_features % 16 == 0:
            y = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale)
        else:
            y = flat @ (self.weight_int8.to(torch.bfloat16) * self.scale[:, None]).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def sampling_copy(model, precision: str):
    """The model that draws the online stages' rollouts: the policy itself (fp32), a copy with bf16 weights, or a bf16
    copy whose linear layers (the LM head too) hold int8 weights (Int8WeightLinear).

    Only the sampling distribution moves: the update's old log-probs and every log-prob it trains on come
    from the fp32 policy, so the samples are off-policy by the copy's KL to it
    (tests/test_generation.py bounds that per token). PyTorch's dynamic int8 quantization (activations
    quantized per tensor) put SmolLM2's sampler ~2 nats/token from the policy (docs/results.md): not offered.
    """
    if precision == "fp32":
        return model
    import copy

    clone = merged(copy.deepcopy(getattr(model, "module", model))).eval().requires_grad_(False)
    for m in clone.modules():  # the copy samples; its head need not be fp32
        if type(m) is FP32Linear:
            m.__class__ = torch.nn.Linear
    clone = clone.to(torch.bfloat16)
    if precision == "int8":
        for parent in list(clone.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear:
                    setattr(parent, name, Int8WeightLinear(child))
    return clone
