"""The sections of the online policy stages: ppo, grpo, rloo and rto share one shape (PolicyOptConfig); what makes
each its algorithm is configuration (advantage, group_size, kl_in, ptx_coef, a token reward)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.sections.base import Section, no_nan, redefault
from tasks.sections.data import Generation
from tasks.sections.training import LoraConfig


class KLConfig(Section):
    estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="per-token KL estimator (k1: log-ratio, k3: always >= 0)"
    )
    coef: float = Field(0.02, ge=0, description="the KL penalty coefficient beta (start value when adaptive)")
    adaptive: bool = Field(True, description="adapt the coefficient to hit kl.target (Ziegler et al. 2019)")
    target: float = Field(5.0, gt=0, description="target sequence-level KL in nats (adaptive controller)")
    horizon: int = Field(10000, ge=1, description="controller horizon in episodes")


RM_REWARD = "rm"  # the trained reward model's name in a `reward` spec


def _reward_spec(v):
    """'rm' or 'module:function' -> {name: 1.0}; a list -> weight 1 each; a mapping as it is."""
    if isinstance(v, str):
        return {v: 1.0}
    if isinstance(v, list):
        return dict.fromkeys(v, 1.0)
    return v


def _reward_names(v: dict[str, float]) -> dict[str, float]:
    if not v:
        raise ValueError("name at least one reward: 'rm' or 'module:function'")
    for name in v:
        mod, _, fn = name.partition(":")
        if name != RM_REWARD and not (mod and fn):
            raise ValueError(f"{name!r} is neither 'rm' nor 'module:function'")
    return v


class PolicyOptConfig(Section):
    """What the online policy stages (ppo, rto, grpo, rloo) share: rollouts, the clipped update, KL, reward."""

    seed: int = Field(0, description="seed of prompt order, sampling and ptx batches")
    iterations: int = Field(3, ge=1, description="rollout + update iterations")
    checkpoint_every: int = Field(2, ge=0, description="save a resumable checkpoint every N iterations (0: never)")
    checkpoint_minutes: float = Field(
        10.0, ge=0, description="and only once this many minutes of training passed since the last one (0: at every N)"
    )
    rollout_batch_size: int = Field(32, ge=1, description="responses (episodes) per iteration")
    minibatch_size: int = Field(8, ge=1, description="episodes per gradient step")
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    lr: float = Field(6e-5, gt=0, lt=1, description="policy learning rate (AdamW)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clip")
    clip: float = Field(0.2, gt=0, description="policy ratio clip epsilon")
    loss_aggregation: Literal["token", "sequence"] = Field(
        "token", description="token: every response token weighs the same; sequence: every response does (GRPO)"
    )
    kl: KLConfig = Field(default_factory=KLConfig, description="KL penalty to the SFT model")
    reward: dict[str, float] = Field(
        default_factory=lambda: {"rm": 1.0},
        description="what the policy maximizes: 'rm' (the trained reward model, normalized), 'module:function' "
        "(Python: (prompt, response) -> float, or text -> float), or {name: weight, ...} summed",
    )
    advantage: Literal["gae", "grpo", "rloo"] = Field(
        "gae",
        description="advantage estimator (tasks/losses.py): gae (with a critic: PPO), grpo ((r - mean) / std of "
        "the group), rloo (r minus the mean of the group's others)",
    )
    group_size: int = Field(1, ge=1, description="K: responses sampled per prompt (rollout_batch_size / K prompts)")
    kl_in: Literal["loss", "reward"] = Field(
        "reward",
        description="the KL to SFT subtracted from the reward before the advantages (PPO, RLOO: k1) or as a loss "
        "term on the current policy (GRPO: k3)",
    )
    whiten_advantages: bool = Field(True, description="normalize advantages over the batch")
    scale_rewards: bool = Field(True, description="grpo: divide by the group's std (false: Dr. GRPO, unbiased)")
    value_lr: float = Field(6e-5, gt=0, lt=1, description="critic learning rate (AdamW)")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    value_clip: float = Field(0.2, gt=0, description="value clip epsilon")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    ptx_coef: float = Field(0.2, ge=0, description="PPO-ptx: weight of the pretraining LM loss (0: plain PPO)")
    ptx_batch_size: int = Field(4, ge=1, description="pretraining texts per update")
    ptx_max_length: int = Field(64, ge=8, description="tokens per pretraining text")
    reward_clip: float = Field(5.0, ge=0, description="clip the score to +-this (PPO-max; 0: off)")
    running_reward_norm: bool = Field(False, description="normalize scores by running mean/std (PPO-max)")
    missing_eos_penalty: float = Field(0.0, le=0, description="added to the score of responses without EOS")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    generation: Generation = Field(default_factory=Generation, description="rollout sampling")
    rollout_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="weights of the copy that samples rollouts (the update's log-probs are always the policy's "
        "fp32 weights): auto = bf16 when compute.precision resolves to bf16, else the fp32 policy itself; "
        "int8 = int8 weight-only linears with bf16 activations (fast only on a CPU with bf16 units)",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA policy (reference = adapter off)")

    _f = field_validator("lr", "ptx_coef", "value_lr", mode="before")(no_nan)
    _r = field_validator("reward", mode="before")(_reward_spec)
    _n = field_validator("reward")(_reward_names)

    @model_validator(mode="after")
    def _whole_groups(self):
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(f"advantage {self.advantage} compares a prompt's responses: group_size must be >= 2")
        if self.rollout_batch_size % self.group_size:
            raise ValueError(
                f"rollout_batch_size={self.rollout_batch_size} must be a multiple of group_size={self.group_size}"
            )
        return self


class PPOConfig(PolicyOptConfig):
    """PPO / PPO-ptx: a critic (initialised from the RM) and GAE."""


class GroupConfig(PolicyOptConfig):
    """Critic-free: group_size responses per prompt, each one's advantage from its group's rewards."""

    advantage: Literal["gae", "grpo", "rloo"] = redefault(PolicyOptConfig, "advantage", "rloo")
    group_size: int = Field(4, ge=2, description="K: responses sampled per prompt (rollout_batch_size / K prompts)")
    whiten_advantages: bool = redefault(PolicyOptConfig, "whiten_advantages", False)
    ptx_coef: float = redefault(PolicyOptConfig, "ptx_coef", 0.0)


class GRPOConfig(GroupConfig):
    """GRPO (Shao et al. 2024): advantage (r - mean) / std over the group; Dr. GRPO with scale_rewards false."""

    advantage: Literal["gae", "grpo", "rloo"] = redefault(PolicyOptConfig, "advantage", "grpo")
    kl_in: Literal["loss", "reward"] = redefault(PolicyOptConfig, "kl_in", "loss")
    kl: KLConfig = redefault(
        PolicyOptConfig, "kl", factory=lambda: KLConfig(estimator="k3", coef=0.04, adaptive=False)
    )  # DeepSeekMath: k3, beta 0.04, fixed
    loss_aggregation: Literal["token", "sequence"] = redefault(PolicyOptConfig, "loss_aggregation", "sequence")


class RLOOConfig(GroupConfig):
    """RLOO (Ahmadian et al. 2024): advantage r minus the mean of the other K - 1 responses' rewards."""


class RTOConfig(PPOConfig):
    """PPO's fields (params.yaml: the values of `ppo`, unless the `rto` section sets them) + RTO's own."""

    lr: float = redefault(PolicyOptConfig, "lr", 5e-5)
    token_beta: float = Field(0.05, gt=0, description="beta_1: scale of the DPO model's token-wise log-ratio reward")
    token_clip: float = Field(0.05, gt=0, description="c: the token reward is clipped to +-c")
    kl: KLConfig = redefault(PolicyOptConfig, "kl", factory=lambda: KLConfig(coef=0.01))  # RTO's code: 0.01
    ptx_coef: float = redefault(PolicyOptConfig, "ptx_coef", 0.0)  # RTO uses no pretraining term
