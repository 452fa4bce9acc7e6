"""The online policy-optimization loop of PPO-ptx (InstructGPT step 3), GRPO, RLOO and RTO, top to bottom. The
loop names no algorithm: the stage's section says how advantages are estimated (`advantage`, an estimator
registered in tasks/losses.py, which also says whether a critic exists), how many responses a prompt gets
(`group_size`), where the KL to SFT goes (`kl_in`), and the pretraining weight (`ptx_coef`); RTO adds its
token-wise reward through the `token_reward` hook.

One iteration, one function each:
  1. rollout:          sample group_size responses per prompt from the policy (tasks/rl/rollout.py)
  2. score_rollout:    old log-probs, reference log-probs (frozen SFT), values (critic), the reward's score
  3. estimate:         per-token rewards r_t = −β·KL_t (kl_in: reward) (+ token reward), the score at the last
                       token; the section's advantage estimator (GAE with the critic, or a group baseline)
  4. update:           ppo_epochs of minibatch steps: clipped policy loss (+ clipped value loss with a critic,
                       + β × KL loss when kl_in is loss, + ptx_coef × LM loss on pretraining text: PPO-ptx)
  5. next_beta:        adaptive β (Ziegler et al.) from the observed sequence-level KL
Implementation details follow "The N implementation details of RLHF with PPO" (Huang et al.) and
"Secrets of RLHF: PPO-max" (Zheng et al.): dropout off, per-token KL, temperature-consistent log-probs,
padding masked everywhere, value model initialised from the RM.

Several processes (ctx): each rolls out its share of every batch (whole groups) with its own seed, advantages are
whitened over the global batch, gradients all-reduced (DDP), statistics averaged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from tasks import losses
from tasks.lm.generation import response_logits
from tasks.lm.models import merged
from tasks.rl.actors import Policy, RunningMoments, ptx_batch, values_of
from tasks.rl.checkpointing import OnlineCheckpoint
from tasks.rl.reward_spec import metric_name
from tasks.rl.rollout import Rollout, Scores, rollout, score_rollout
from tasks.runtime.context import SINGLE_PROCESS, RunContext, to_device
from tasks.runtime.device import seed_everything
from tasks.runtime.result import TrainResult
from tasks.sections.policy import RM_REWARD
from tasks.train.reward_model import TokenScorer

RM_SCORE = "rm_score"  # the RM term's normalized score in the logs (the dvc plots and MLflow charts use it)


@dataclass(frozen=True)
class OnlineInputs:
    """What an online stage trains from."""

    prompts: list  # the policy prompts
    texts: list[str]  # pretraining texts (PPO-ptx's LM term)
    sft_dir: Path  # the SFT model: the policy's start and the KL reference
    rm_dir: Path  # the reward model (and the critic's start); may record 'skipped'
    start_dir: Path | None = None  # where the policy starts when not SFT (a later round continuing its policy)


@dataclass(frozen=True)
class Advantages:
    """Step 3's output, all (N, L) and 0 on padding."""

    kl: torch.Tensor  # the per-token KL estimate to SFT (cfg.kl.estimator)
    token_reward: torch.Tensor | None  # RTO's token-wise DPO reward; None otherwise
    rewards: torch.Tensor  # r_t: −β·KL_t (kl_in: reward) + token reward + the score at the last token
    advantages: torch.Tensor  # A_t from the section's estimator (whitened when cfg.whiten_advantages)
    returns: torch.Tensor | None  # the critic's targets; None without a critic


@dataclass
class Learner:
    """What the update steps: the (wrapped) nets, their optimizers, and PPO-ptx's texts and tokenizer."""

    nets: dict  # {"policy": net, "value": net} (no "value" without a critic)
    optimizers: dict
    texts: list[str]
    tok: object
    prompt_rng: random.Random  # draws the ptx batches (and the prompts), checkpointed with the run


def estimate(roll: Rollout, scores: Scores, cfg, beta: float, token_reward: Callable | None, ctx: RunContext):
    """3. Per-token rewards, then the section's advantage estimator (and whitening over the global batch)."""
    mask = roll.mask
    kl = losses.kl_estimate(scores.old_logp, scores.ref_logp, cfg.kl.estimator) * mask
    extra = token_reward(roll.packed, scores.old_logp, scores.ref_logp) if token_reward else None
    kl_coef_in_reward = beta if cfg.kl_in == "reward" else 0.0
    rewards = losses.token_rewards(kl, scores.score, mask, kl_coef_in_reward, extra)
    estimator = losses.ADVANTAGE_ESTIMATORS[cfg.advantage]
    advantages, returns = estimator.estimate(rewards, scores.old_values, mask, cfg)
    if cfg.whiten_advantages:
        advantages = losses.whiten(advantages, mask, all_sum=ctx.all_sum if ctx.accelerator else None)
    return Advantages(kl=kl, token_reward=extra, rewards=rewards, advantages=advantages, returns=returns)


def update(learner: Learner, roll: Rollout, scores: Scores, adv: Advantages, beta: float, cfg, ctx: RunContext):
    """4. cfg.ppo_epochs passes of minibatch steps; returns each diagnostic's per-step values."""
    policy_net, value_net = learner.nets["policy"], learner.nets.get("value")
    packed, temperature, n = roll.packed, cfg.generation.temperature, len(roll.responses)
    stats: dict[str, list[float]] = {}
    for _ in range(cfg.ppo_epochs):
        for idx in torch.randperm(n).split(cfg.minibatch_size // ctx.world):
            mb = {k: (v[idx] if torch.is_tensor(v) and v.shape[0] == n else v) for k, v in packed.items()}
            mask = mb["response_mask"]
            with ctx.autocast():
                logits = response_logits(policy_net, mb).float() / temperature
                logp = losses.token_logprobs(logits, mb["response"]) * mask
                pg_loss, pg_stats = losses.ppo_policy_loss(
                    logp, scores.old_logp[idx], adv.advantages[idx], mask, cfg.clip, cfg.loss_aggregation
                )
                entropy = losses.masked_mean(losses.entropy_from_logits(logits), mask).item()
                loss = pg_loss
                if cfg.kl_in == "loss":  # the KL to SFT on the current policy's log-probs, as a loss term (GRPO)
                    kl_t = losses.kl_estimate(logp, scores.ref_logp[idx], cfg.kl.estimator) * mask
                    kl_loss = losses.aggregate(kl_t, mask, cfg.loss_aggregation)
                    loss = loss + beta * kl_loss
                    stats.setdefault("kl_loss", []).append(kl_loss.item())
                if cfg.ptx_coef > 0:  # PPO-ptx: keep the pretraining distribution's likelihood
                    ptx_loss = pretraining_loss(learner, policy_net, cfg, ctx)
                    loss = loss + cfg.ptx_coef * ptx_loss
                    stats.setdefault("ptx_loss", []).append(ptx_loss.item())
                step_stats = {"policy_loss": pg_loss.item(), "entropy": entropy, **pg_stats}
                if value_net is not None:
                    values = values_of(value_net, mb).float()
                    vf_loss, vf_stats = losses.value_loss(
                        values, scores.old_values[idx], adv.returns[idx], mask, cfg.value_clip
                    )
                    loss = loss + cfg.vf_coef * vf_loss
                    step_stats |= {"value_loss": vf_loss.item(), **vf_stats}
            for opt in learner.optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for net in learner.nets.values():
                ctx.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], cfg.max_grad_norm)
            for opt in learner.optimizers.values():
                opt.step()
            for k, v in step_stats.items():
                stats.setdefault(k, []).append(v)
    return stats


def pretraining_loss(learner: Learner, policy_net, cfg, ctx: RunContext) -> torch.Tensor:
    """PPO-ptx's LM loss on a fresh draw of ptx_batch_size pretraining texts (this process's share)."""
    texts = learner.prompt_rng.sample(learner.texts, min(cfg.ptx_batch_size, len(learner.texts)))
    batch = ptx_batch(texts[ctx.rank :: ctx.world] or texts, learner.tok, cfg.ptx_max_length)
    batch = to_device(batch, ctx.device)
    lm_logits = policy_net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return losses.sft_loss(lm_logits, batch["labels"])


def iteration_metrics(it: int, roll: Rollout, scores: Scores, adv: Advantages, stats: dict, beta: float, monitor):
    """What one iteration logs (this process's; the caller averages over processes): the score and each reward
    term, the held-out judges' scores (monitor(roll): gold, held-out RM), KL, β, the update's losses."""
    mask, rewards, extra = roll.mask, adv.rewards, adv.token_reward
    terms = {
        (RM_SCORE if name == RM_REWARD else metric_name(name)): v.mean().item() for name, v in scores.parts.items()
    }
    row = {
        "iteration": it + 1,
        "step": it + 1,
        "score": scores.score.mean().item(),
        **terms,
        "kl": adv.kl.sum(1).mean().item(),
        "kl_coef": beta,
        "response_length": mask.sum(1).mean().item(),
        "eos_rate": roll.ended.float().mean().item(),
        "reward_total": rewards.sum(1).mean().item(),
        **{k: sum(v) / len(v) for k, v in stats.items()},
    }
    if extra is not None:
        row["token_reward"] = (extra * mask).sum(1).mean().item()
        row["token_reward_share"] = (extra * mask).abs().sum().item() / (rewards.abs().sum().item() + 1e-8)
    return row | (monitor(roll) if monitor else {})


def next_beta(beta: float, row: dict, cfg, episodes: int) -> float:
    """5. The KL controller on the observed sequence-level KL (sum over tokens, mean over the global batch)."""
    if not cfg.kl.adaptive:
        return beta
    return losses.adaptive_kl_update(beta, row["kl"], cfg.kl.target, cfg.kl.horizon, episodes)


def train_ppo(
    cfg,
    inputs: OnlineInputs,
    out_dir,
    ctx: RunContext = SINGLE_PROCESS,
    *,
    stage: str = "ppo",
    monitor: Callable | None = None,
    token_reward: Callable | None = None,
    hooks: dict | None = None,
) -> TrainResult:
    """cfg.iterations iterations of the stage's section `cfg` -> the policy in out_dir (rank 0 writes it).

    token_reward(packed, logp, ref_logp) -> (N, L) adds a token-wise reward (RTO). monitor(rollout) -> {name:
    value} logged each iteration (tasks/rl/monitor.py: the judges it does not optimize). hooks: on_iter(iteration,
    row) after each iteration, checkpoint_dir for resumable state.
    """
    hooks = hooks or {}
    seed_everything(cfg.seed)
    critic = losses.ADVANTAGE_ESTIMATORS[cfg.advantage].critic
    pol = Policy(cfg, inputs.sft_dir, inputs.rm_dir, ctx.device, critic, stage, inputs.start_dir)
    modules = {"policy": pol.model} | ({"value": pol.value} if pol.value is not None else {})
    lrs = {"policy": cfg.lr, "value": cfg.value_lr}
    optimizers = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lrs[name], eps=1e-5)
        for name, m in modules.items()
    }
    prompt_rng, running = random.Random(cfg.seed), RunningMoments()
    ckpt = OnlineCheckpoint(cfg, inputs, stage, hooks.get("checkpoint_dir"))
    start, beta, history = ckpt.resume(modules, optimizers, prompt_rng, running)
    wrapped = {"policy": pol.model} | ({"value": TokenScorer(pol.value)} if pol.value is not None else {})
    prepared = ctx.prepare(*wrapped.values(), *optimizers.values())
    prepared = prepared if isinstance(prepared, tuple) else (prepared,)
    learner = Learner(
        nets=dict(zip(wrapped, prepared[: len(wrapped)])),
        optimizers=dict(zip(optimizers, prepared[len(wrapped) :])),
        texts=inputs.texts,
        tok=pol.tok,
        prompt_rng=prompt_rng,
    )
    bar = tqdm(range(start, cfg.iterations), desc=stage, initial=start, total=cfg.iterations, disable=not ctx.is_main)
    for it in bar:
        roll = rollout(pol, inputs.prompts, cfg, it, prompt_rng, ctx)
        scores = score_rollout(pol, roll, cfg, running, ctx)
        adv = estimate(roll, scores, cfg, beta, token_reward, ctx)
        for m in modules.values():
            m.train()
        stats = update(learner, roll, scores, adv, beta, cfg, ctx)
        for m in modules.values():
            m.eval()
        row = ctx.reduce_mean(iteration_metrics(it, roll, scores, adv, stats, beta, monitor))
        beta = next_beta(beta, row, cfg, episodes=len(roll.responses) * ctx.world)
        history.append(row)
        if on_iter := hooks.get("on_iter"):
            on_iter(it + 1, row)
        ckpt.maybe_save(it + 1, ctx, modules, optimizers, {"kl_coef": beta, "history": history})
        ctx.barrier()
    pol.model = merged(pol.model)
    return save_policy(pol, history, cfg, out_dir, ctx)


def save_policy(pol: Policy, history: list[dict], cfg, out_dir, ctx: RunContext) -> TrainResult:
    """Write the trained policy (rank 0 only); its history and summary metrics."""
    if ctx.is_main:
        pol.model.save_pretrained(out_dir, safe_serialization=True)
        pol.tok.save_pretrained(out_dir)
    metrics = {"kl_target": cfg.kl.target, "final_kl_coef": history[-1]["kl_coef"], "iterations": len(history)}
    if "token_reward" in history[-1]:  # RTO: the DPO model's token-wise reward, so a person sees it working
        metrics.update(
            token_reward_mean=sum(r["token_reward"] for r in history) / len(history),
            token_reward_share=sum(r["token_reward_share"] for r in history) / len(history),
        )
    return TrainResult(str(out_dir), history, metrics)
