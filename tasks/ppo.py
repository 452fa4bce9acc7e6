"""PPO / PPO-ptx for RLHF (InstructGPT step 3), readable top to bottom. RTO reuses it (token_reward hook).

One iteration:
  1. rollout: sample one response per prompt from the policy (temperature T, stop at EOS)
  2. score:   old log-probs (policy), reference log-probs (frozen SFT), values (critic), RM score
              (normalized with the RM's stored gain/bias; PPO-max: optional running norm + clipping;
              penalty for responses without EOS)
  3. rewards: r_t = −β·KL_t (+ token reward) with the score added at the last response token
  4. GAE (γ, λ) -> advantages (whitened over the batch) and returns
  5. several epochs of minibatch updates: clipped policy loss + clipped value loss
     (+ γ_ptx × LM loss on pretraining text: PPO-ptx)
  6. adaptive β (Ziegler et al.) from the observed sequence-level KL
Implementation details follow "The N implementation details of RLHF with PPO" (Huang et al.) and
"Secrets of RLHF: PPO-max" (Zheng et al.): dropout off, per-token KL, temperature-consistent log-probs,
padding masked everywhere, value model initialised from the RM.
"""
from __future__ import annotations

import copy
import json
import math
import random
from typing import Callable

import torch
from tqdm import tqdm

from tasks import distributed
from tasks import losses as L
from tasks.batching import encode_example
from tasks.checkpoint import Checkpoint
from tasks.common import seed_everything
from tasks.data import load_split
from tasks.generation import pack, response_logits, response_logprobs, sample
from tasks.reward import TokenScorer, load_reward_norm, load_scalar_model, sequence_rewards, token_scalars
from tasks.sft import load_lm
from tasks.train import add_lora, autocast, disable_dropout, merged, to_device


class RunningMoments:
    """Running mean/std of scores (PPO-max reward normalization), Chan et al. parallel update."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor) -> None:
        m, v, n = x.mean().item(), x.var(unbiased=False).item(), x.numel()
        delta, total = m - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + v * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


def process_scores(raw: torch.Tensor, ended: torch.Tensor, norm: dict, cfg, running: RunningMoments) -> torch.Tensor:
    """RM output -> the score PPO optimizes: stored normalization, EOS penalty, optional running norm, clip."""
    score = raw * norm["gain"] + norm["bias"]
    score = torch.where(ended, score, score + cfg.missing_eos_penalty)
    if cfg.running_reward_norm:
        running.update(score)
        score = (score - running.mean) / (running.std + 1e-8)
    return score.clamp(-cfg.reward_clip, cfg.reward_clip) if cfg.reward_clip else score


def save_policy(pol, history: list[dict], cfg, out_dir) -> dict:
    """Write the trained policy (rank 0 only) and the stage's summary metrics."""
    from tasks.distributed import is_main

    if is_main():
        pol.model.save_pretrained(out_dir, safe_serialization=True)
        pol.tok.save_pretrained(out_dir)
    metrics = {"kl_target": cfg.kl.target, "final_beta": history[-1]["beta"], "iterations": len(history)}
    if "token_reward" in history[-1]:  # RTO: the DPO model's token-wise reward, so a person sees it working
        metrics.update(token_reward_mean=sum(r["token_reward"] for r in history) / len(history),
                       token_reward_share=sum(r["token_reward_share"] for r in history) / len(history))
    return {"history": history, "metrics": metrics}


def ptx_batch(texts: list[str], tok, max_length: int) -> dict:
    from tasks.batching import collate

    return collate([encode_example("", t, tok, max_length) for t in texts], tok.pad_token_id)


class Policy:
    """The trained policy, its frozen reference and the critic; with LoRA, the reference is the policy
    with its adapter disabled (no second copy in memory)."""

    def __init__(self, cfg, sft_dir, rm_dir, device, init_dir=None):
        model, self.tok = load_lm(init_dir or sft_dir, device)
        disable_dropout(model)
        self.lora = cfg.lora.enabled
        self.ref = None if self.lora else copy.deepcopy(model).eval().requires_grad_(False)
        self.model = add_lora(model, cfg.lora)
        self.value, _ = load_scalar_model(rm_dir, device)      # critic initialised from the RM
        self.rm, _ = load_scalar_model(rm_dir, device)
        for m in (self.value, self.rm):
            disable_dropout(m)
        self.rm.eval().requires_grad_(False)
        self.norm = load_reward_norm(rm_dir)

    @torch.no_grad()
    def ref_logprobs(self, packed, temperature):
        if self.lora:
            with self.model.disable_adapter():
                return response_logprobs(self.model, packed, temperature)
        return response_logprobs(self.ref, packed, temperature)


def values_of(value_model, packed) -> torch.Tensor:
    """V(s_t) for each response token t: the critic's head at the position that predicts token t."""
    P, Lr = packed["P"], packed["response"].shape[1]
    return token_scalars(value_model, packed)[:, P - 1: P + Lr - 1] * packed["response_mask"]


def train_ppo(cfg, sft_dir, rm_dir, device, dtype, gold_scorer: Callable | None = None,
              token_reward: Callable | None = None, on_iter: Callable | None = None) -> tuple:
    """Run cfg.iterations PPO iterations. Returns (policy wrapper, per-iteration history).

    token_reward(packed, logp, ref_logp) -> (B, L) adds a token-wise reward (RTO); None for PPO.
    """
    seed_everything(cfg.seed)
    pol = Policy(cfg, sft_dir, rm_dir, device)
    tok, T = pol.tok, cfg.generation.temperature
    prompts = [r["prompt"] for r in load_split("policy")]
    texts = [r["text"] for r in load_split("pretrain")]
    opt = torch.optim.AdamW([p for p in pol.model.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5)
    vopt = torch.optim.AdamW(pol.value.parameters(), lr=cfg.value_lr, eps=1e-5)
    rng, running, beta, history = random.Random(cfg.seed), RunningMoments(), cfg.kl.coef, []
    stage = "rto" if token_reward else "ppo"
    ckpt = Checkpoint(stage, cfg.checkpoint_every, {"cfg": cfg.model_dump(exclude={"checkpoint_every"}),
                                                    "prompts": prompts, "texts": texts})
    start = 0
    if state := ckpt.load({"policy": pol.model, "value": pol.value}):
        opt.load_state_dict(state["optimizer"]), vopt.load_state_dict(state["value_optimizer"])
        rng.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in json.loads(state["prompt_rng"])))
        running.mean, running.var, running.count = state["running"]
        start, beta, history = state["step"], state["beta"], state["history"]
    # Several processes (compute.num_processes): each rolls out its share of every batch with its own seed,
    # advantages are whitened over the global batch, gradients all-reduced (DDP), statistics averaged.
    acc, (rank, world) = distributed.accelerator(), distributed.rank_and_world()
    policy_net, value_net = pol.model, pol.value
    if acc:
        policy_net, value_net, opt, vopt = acc.prepare(pol.model, TokenScorer(pol.value), opt, vopt)
    clip = acc.clip_grad_norm_ if acc else torch.nn.utils.clip_grad_norm_

    for it in tqdm(range(start, cfg.iterations), desc=stage, dynamic_ncols=True, initial=start,
                   total=cfg.iterations, disable=not distributed.is_main()):
        # 1. rollout (dropout is off and the policy in eval mode: log-probs match the sampler's)
        batch_prompts = rng.sample(prompts, min(cfg.rollout_batch_size, len(prompts)))[rank::world]
        pol.model.eval()
        roll = sample(pol.model, tok, batch_prompts, 1, cfg.generation, cfg.seed * 7919 + it + 104_729 * rank,
                      device, dtype, cfg.max_prompt_len, desc=f"rollout {it + 1}")
        packed = to_device(pack([r["query"] for r in roll], [r["response"] for r in roll], tok.pad_token_id), device)
        mask = packed["response_mask"]
        ended = torch.tensor([r["ended"] for r in roll], device=device)
        # 2. score
        with torch.no_grad(), autocast(device, dtype):
            old_logp = response_logprobs(pol.model, packed, T)
            ref_logp = pol.ref_logprobs(packed, T)
            old_values = values_of(pol.value, packed).float()
            raw = sequence_rewards(pol.rm, packed, pol.norm.get("pooling", "last")).float()
        score = process_scores(raw, ended, pol.norm, cfg, running)
        # 3. rewards, 4. advantages
        kl = L.kl_estimate(old_logp, ref_logp, cfg.kl.estimator) * mask
        extra = token_reward(packed, old_logp, ref_logp) if token_reward else None
        rewards = L.token_rewards(kl, score, mask, beta, extra)
        adv, returns = L.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = L.whiten(adv, mask, all_sum=distributed.all_sum if acc else None)
        # 5. PPO epochs over shuffled minibatches
        stats: dict[str, list[float]] = {}
        pol.model.train(), pol.value.train()
        n = len(roll)
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(n).split(cfg.minibatch_size // world):
                mb = {k: (v[idx] if torch.is_tensor(v) and v.shape[0] == n else v) for k, v in packed.items()}
                m = mb["response_mask"]
                with autocast(device, dtype):
                    logits = response_logits(policy_net, mb).float() / T
                    logp = L.token_logprobs(logits, mb["response"]) * m
                    pg_loss, pg_stats = L.ppo_policy_loss(logp, old_logp[idx], adv[idx], m, cfg.clip)
                    entropy = L.masked_mean(L.entropy_from_logits(logits), m).item()
                    loss = pg_loss
                    if cfg.ptx_coef > 0:  # PPO-ptx: keep the pretraining distribution's likelihood
                        ptx_texts = rng.sample(texts, min(cfg.ptx_batch_size, len(texts)))
                        b = to_device(ptx_batch(ptx_texts[rank::world] or ptx_texts, tok, cfg.ptx_max_length), device)
                        lm_logits = policy_net(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                        ptx = L.sft_loss(lm_logits, b["labels"])
                        loss = loss + cfg.ptx_coef * ptx
                        stats.setdefault("ptx_loss", []).append(ptx.item())
                    v = values_of(value_net, mb).float()
                    vf_loss, vf_stats = L.value_loss(v, old_values[idx], returns[idx], m, cfg.value_clip)
                opt.zero_grad(set_to_none=True), vopt.zero_grad(set_to_none=True)
                (loss + cfg.vf_coef * vf_loss).backward()
                clip([p for p in policy_net.parameters() if p.requires_grad], cfg.max_grad_norm)
                clip(list(value_net.parameters()), cfg.max_grad_norm)
                opt.step(), vopt.step()
                for k, val in {"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), "entropy": entropy,
                               **pg_stats, **vf_stats}.items():
                    stats.setdefault(k, []).append(val)
        pol.model.eval(), pol.value.eval()
        # 6. KL controller on the observed sequence-level KL (sum over tokens, mean over the global batch)
        row = {"iteration": it + 1, "step": it + 1, "rm_score": score.mean().item(), "rm_raw": raw.mean().item(),
               "kl": kl.sum(1).mean().item(), "beta": beta, "response_length": mask.sum(1).mean().item(),
               "eos_rate": ended.float().mean().item(), "reward_total": rewards.sum(1).mean().item(),
               **{k: sum(v) / len(v) for k, v in stats.items()}}
        if extra is not None:
            row["token_reward"] = (extra * mask).sum(1).mean().item()
            row["token_reward_share"] = (extra * mask).abs().sum().item() / (rewards.abs().sum().item() + 1e-8)
        if gold_scorer:
            row["gold_score"] = sum(gold_scorer(p + r["text"] if isinstance(p, str) else r["text"])
                                    for p, r in zip(batch_prompts, roll)) / len(roll)
        row = distributed.reduce_mean(row)
        if cfg.kl.adaptive:
            beta = L.adaptive_kl_update(beta, row["kl"], cfg.kl.target, cfg.kl.horizon, n * world)
        history.append(row)
        if on_iter:
            on_iter(it + 1, row)
        if ckpt.due(it + 1) and it + 1 < cfg.iterations and distributed.is_main():  # + KL controller, reward norm
            ckpt.save(it + 1, {"policy": pol.model, "value": pol.value}, {
                "optimizer": opt.state_dict(), "value_optimizer": vopt.state_dict(), "beta": beta,
                "prompt_rng": json.dumps(rng.getstate()), "running": [running.mean, running.var, running.count],
                "history": history})
        distributed.barrier()
    pol.model = merged(pol.model)
    return pol, history
