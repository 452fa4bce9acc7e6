"""GRPO (Shao et al. 2024, DeepSeekMath) and RLOO (Ahmadian et al. 2024): PPO's machinery without a critic.

Each prompt gets K = group_size responses; a response's reward is its score (minus β·Σ_t KL_t when the KL is
in the reward), and its advantage comes from its group alone — GRPO: (r − mean) / std (Dr. GRPO: r − mean),
RLOO: r minus the mean of the other K − 1 — the same for every token of the response. The update is PPO's
clipped surrogate; GRPO puts the k3 KL to SFT into the loss instead, on the current policy's log-probs.
Groups never straddle processes (each rolls out whole groups), so no statistic crosses them.
"""

from __future__ import annotations

from pathlib import Path

from tasks import losses
from tasks.rl.ppo import train_ppo
from tasks.runtime.context import SINGLE_PROCESS, DistContext


def group_advantages(scores, cfg, stage: str):
    """(N,) advantages of N = n_prompts × K sequence rewards, each group's K adjacent."""
    if stage == "rloo":
        return losses.rloo_advantages(scores, cfg.group_size)
    return losses.grpo_advantages(scores, cfg.group_size, cfg.scale_rewards)


def group_shaper(stage: str):
    """Steps 3-4 of tasks/rl/ppo.py for a critic-free stage: sequence rewards -> group advantages on every token."""

    def shape(roll: dict, scored: dict, cfg, beta: float, token_reward, ctx: DistContext) -> dict:
        mask = roll["packed"]["response_mask"]
        kl = losses.kl_estimate(scored["old_logp"], scored["ref_logp"], cfg.kl.estimator) * mask
        in_reward = cfg.kl_in == "reward"
        rewards = losses.token_rewards(kl, scored["score"], mask, beta if in_reward else 0.0)
        advantages = group_advantages(rewards.sum(1), cfg, stage)
        return {
            "kl": kl,
            "extra": None,
            "rewards": rewards,
            "advantages": advantages[:, None] * mask,
            "kl_loss_coef": 0.0 if in_reward else beta,
        }

    return shape


def train_group(
    cfg,
    prompts: list,
    texts: list[str],
    sft_dir: Path,
    rm_dir: Path,
    device: str,
    dtype,
    ctx: DistContext = SINGLE_PROCESS,
    *,
    stage: str = "grpo",
    **ppo_kwargs,
):
    """cfg.iterations GRPO (stage 'grpo') or RLOO ('rloo') iterations; ppo_kwargs as train_ppo takes them
    (gold_scorer, on_iter, checkpoint_dir). Returns (policy, history)."""
    shape, k = group_shaper(stage), cfg.group_size
    return train_ppo(
        cfg, prompts, texts, sft_dir, rm_dir, device, dtype, ctx, stage=stage, shape=shape, group_size=k, **ppo_kwargs
    )
