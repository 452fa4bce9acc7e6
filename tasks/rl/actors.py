"""The models the online policy stages train against: the policy, its frozen reference, the critic and the
reward, and how the reward's score becomes the score they optimize."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from tasks.lm.batching import collate, encode_example
from tasks.lm.generation import response_logprobs
from tasks.lm.models import add_lora, disable_dropout, load_lm, load_scalar_model
from tasks.rl.reward_spec import load_functions, needs_rm
from tasks.train.reward_model import load_reward_norm, token_scalars


class RunningMoments:
    """Running mean/std of scores (PPO-max reward normalization), Chan et al. parallel update."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor) -> None:
        batch_mean, batch_var, n = x.mean().item(), x.var(unbiased=False).item(), x.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def state(self) -> list[float]:
        return [self.mean, self.var, self.count]

    def load_state(self, state: list[float]) -> None:
        self.mean, self.var, self.count = state


def process_scores(score: torch.Tensor, ended: torch.Tensor, cfg, running: RunningMoments) -> torch.Tensor:
    """The reward's score -> the score the policy optimizes: EOS penalty, optional running norm, clip (PPO-max)."""
    score = torch.where(ended, score, score + cfg.missing_eos_penalty)
    if cfg.running_reward_norm:
        running.update(score)
        score = (score - running.mean) / (running.std + 1e-8)
    return score.clamp(-cfg.reward_clip, cfg.reward_clip) if cfg.reward_clip else score


def trained(model_dir) -> bool:
    """False for a stage output that records 'skipped' (tasks don't know flows' paths: they get the dir)."""
    return not (Path(model_dir) / "SKIPPED").exists()


class Policy:
    """The trained policy, its frozen reference, the critic (when the advantage estimator needs one) and the reward
    (the RM and/or Python functions, params `reward`); with LoRA, the reference is the policy with its adapter
    disabled (no second copy in memory). start_dir: the policy's starting weights when they are not SFT's (a later
    round continuing its previous policy); the reference stays SFT."""

    def __init__(self, cfg, sft_dir, rm_dir, device, critic: bool = True, section: str = "ppo", start_dir=None):
        model, self.tok = load_lm(start_dir or sft_dir, device)
        disable_dropout(model)
        if start_dir is not None:  # the reference is SFT, not where this policy starts
            self.ref = load_lm(sft_dir, device)[0].eval().requires_grad_(False)
            disable_dropout(self.ref)
        else:
            self.ref = None if cfg.lora.enabled else copy.deepcopy(model).eval().requires_grad_(False)
        self.model = add_lora(model, cfg.lora)
        self.rm, self.norm, self.value = None, {}, None
        if needs_rm(cfg.reward):
            self.rm, _ = load_scalar_model(rm_dir, device)
            self.rm.eval().requires_grad_(False)
            self.norm = load_reward_norm(rm_dir)
        if critic:  # initialised from the RM; from SFT with a fresh head when no RM was trained
            self.value, _ = load_scalar_model(rm_dir if trained(rm_dir) else sft_dir, device)
        for m in (self.value, self.rm):
            if m is not None:
                disable_dropout(m)
        self.functions = load_functions(cfg.reward, section)

    @torch.no_grad()
    def ref_logprobs(self, packed, temperature):
        if self.ref is None:  # LoRA from SFT: the adapter off is SFT
            with self.model.disable_adapter():
                return response_logprobs(self.model, packed, temperature)
        return response_logprobs(self.ref, packed, temperature)


def values_of(value_model, packed) -> torch.Tensor:
    """V(s_t) for each response token t (B, L): the critic's head at the position that predicts token t."""
    prompt_len, response_len = packed["P"], packed["response"].shape[1]
    return (
        token_scalars(value_model, packed)[:, prompt_len - 1 : prompt_len + response_len - 1] * packed["response_mask"]
    )


def ptx_batch(texts: list[str], tok, max_length: int) -> dict:
    """Pretraining texts as an LM batch (every token labeled): PPO-ptx's language-modeling term."""
    return collate([encode_example("", t, tok, max_length) for t in texts], tok.pad_token_id)
