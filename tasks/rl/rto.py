"""RTO (Reinforced Token Optimization, Zhong et al. 2024): PPO where every response token also gets the
DPO policy's implicit reward β₁·(log π_dpo − log π_ref), clipped to ±c. PPO's machinery, one hook."""

from __future__ import annotations

from pathlib import Path

import torch

from tasks.lm.generation import response_logprobs
from tasks.lm.models import load_lm
from tasks.losses import rto_token_reward
from tasks.rl.ppo import OnlineInputs, train_ppo
from tasks.runtime.context import SINGLE_PROCESS, RunContext
from tasks.runtime.result import TrainResult


def train_rto(
    cfg, inputs: OnlineInputs, out_dir, ctx: RunContext = SINGLE_PROCESS, *, dpo_dir: Path, **ppo_kwargs
) -> TrainResult:
    """PPO (cfg: the rto section) with the DPO model in dpo_dir as a token-wise reward; ppo_kwargs as train_ppo
    takes them (stage, monitor, hooks)."""
    dpo, _ = load_lm(dpo_dir, ctx.device)
    dpo.eval().requires_grad_(False)
    temperature = cfg.generation.temperature

    def token_reward(packed, logp, ref_logp):
        with torch.no_grad():
            logp_dpo = response_logprobs(dpo, packed, temperature)
        return rto_token_reward(logp_dpo, ref_logp, packed["response_mask"], cfg.token_beta, cfg.token_clip)

    return train_ppo(cfg, inputs, out_dir, ctx, token_reward=token_reward, **ppo_kwargs)
