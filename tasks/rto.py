"""RTO (Reinforced Token Optimization, Zhong et al. 2024): PPO where every response token also gets the
DPO policy's implicit reward β₁·(log π_dpo − log π_ref), clipped to ±c. PPO's machinery, one hook."""
from __future__ import annotations

import torch

from tasks.generation import response_logprobs
from tasks.losses import rto_token_reward
from tasks.ppo import train_ppo
from tasks.sft import load_lm


def train_rto(cfg, sft_dir, rm_dir, dpo_dir, device, dtype, gold_scorer=None, on_iter=None):
    dpo, _ = load_lm(dpo_dir, device)
    dpo.eval().requires_grad_(False)
    T = cfg.generation.temperature

    def token_reward(packed, logp, ref_logp):
        with torch.no_grad():
            logp_dpo = response_logprobs(dpo, packed, T)
        return rto_token_reward(logp_dpo, ref_logp, packed["response_mask"], cfg.token_beta, cfg.token_clip)

    return train_ppo(cfg, sft_dir, rm_dir, device, dtype, gold_scorer=gold_scorer, token_reward=token_reward,
                     on_iter=on_iter)
