"""The sections of the offline trainers: sft, rm and dpo (and the LoRA settings every trainer shares)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.sections.base import Section, no_nan, redefault


class LoraConfig(Section):
    enabled: bool = Field(False, description="train a LoRA adapter instead of every weight")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="module names that get adapters"
    )


class TrainConfig(Section):
    """Fields every training stage shares."""

    seed: int = Field(0, description="seed of data order, init and sampling")
    epochs: float = Field(1.0, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step (before accumulation)")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    lr: float = Field(5e-5, gt=0, lt=1, description="peak learning rate (AdamW)")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps spent in linear warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clip")
    max_length: int = Field(128, ge=8, description="max tokens of prompt + completion (longer are truncated)")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="parameter-efficient fine-tuning")
    eval_batch_size: int = Field(16, ge=1, description="batch size of forward-only evaluation")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: never)")
    checkpoint_minutes: float = Field(
        10.0, ge=0, description="and only once this many minutes of training passed since the last one (0: at every N)"
    )

    _f = field_validator("lr", "weight_decay", "max_grad_norm", "epochs", mode="before")(no_nan)


class SFTConfig(TrainConfig):
    max_steps: int | None = redefault(TrainConfig, "max_steps", 24)
    max_length: int = redefault(TrainConfig, "max_length", 96)
    checkpoint_every: int = redefault(TrainConfig, "checkpoint_every", 12)
    heldout_max_examples: int | None = Field(
        48, ge=1, description="score only the first N held-out demonstrations, before and after training (null: all)"
    )


class RMConfig(TrainConfig):
    batch_size: int = Field(4, ge=1, description="prompts per optimizer step (all pairs of a prompt together)")
    lr: float = redefault(TrainConfig, "lr", 2e-4)
    checkpoint_every: int = redefault(TrainConfig, "checkpoint_every", 20)
    center_coef: float = Field(0.01, ge=0, description="reward-centering coefficient: eta * (r_c + r_r)^2")
    use_margin: bool = Field(False, description="subtract a pair's 'margin' field inside the sigmoid")
    heldout_frac: float = Field(0.2, gt=0, lt=1, description="share of prompts whose pairs are held out")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    pooling: Literal["last", "mean"] = Field(
        "mean", description="reward = head at the last response token (InstructGPT) or mean over response tokens"
    )
    freeze_layers: int = Field(
        0, ge=0, description="bottom transformer blocks (and embeddings) kept frozen; 0: train all"
    )


class DPOConfig(TrainConfig):
    max_steps: int | None = redefault(TrainConfig, "max_steps", 16)
    lr: float = redefault(TrainConfig, "lr", 1e-4)
    warmup_ratio: float = redefault(TrainConfig, "warmup_ratio", 0.1)
    max_length: int = redefault(TrainConfig, "max_length", 112)
    checkpoint_every: int = redefault(TrainConfig, "checkpoint_every", 8)
    batch_size: int = Field(
        4, ge=1, description="prompts per optimizer step: all K-choose-2 pairs of a prompt share it"
    )
    kl_coef: float = Field(0.1, gt=0, description="DPO's beta: strength of the implicit KL constraint to SFT")
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid: DPO (cDPO with label_smoothing > 0); ipo: IPO"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO: assumed label-flip rate epsilon")
    pairs: Literal["all", "max_min"] = Field(
        "all",
        description="which labeled pairs of a prompt it trains on: all (K choose 2) | max_min: one, the completion "
        "that won the most of its comparisons over the one that won the fewest (RLHFlow's iterative DPO)",
    )
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    heldout_frac: float = Field(0.1, gt=0, lt=1, description="share of prompts held out (same hash split as the RM)")

    _b = field_validator("kl_coef", "label_smoothing", mode="before")(no_nan)
