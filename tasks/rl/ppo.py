"""PPO / PPO-ptx for RLHF (InstructGPT step 3), readable top to bottom. RTO reuses it (token_reward hook);
GRPO and RLOO (tasks/rl/group.py) reuse it without a critic (shape hook, group_size responses per prompt).

One iteration, one function each:
  1. rollout:        sample group_size responses per prompt from the policy (temperature T, stop at EOS)
  2. score_rollout:  old log-probs (policy), reference log-probs (frozen SFT), values (critic), the reward
                     (params `reward`: the RM normalized with its stored gain/bias, Python functions, or a
                     weighted sum; PPO-max: optional running norm + clipping; penalty for responses without EOS)
  3. shape_rewards:  r_t = −β·KL_t (+ token reward) with the score added at the last response token, then
  4.                 GAE (γ, λ) -> advantages (whitened over the batch) and returns
  5. update:         several epochs of minibatch updates: clipped policy loss + clipped value loss
                     (+ β × KL loss when the KL is a loss term; + γ_ptx × LM loss on pretraining text: PPO-ptx)
  6. next_beta:      adaptive β (Ziegler et al.) from the observed sequence-level KL
Implementation details follow "The N implementation details of RLHF with PPO" (Huang et al.) and
"Secrets of RLHF: PPO-max" (Zheng et al.): dropout off, per-token KL, temperature-consistent log-probs,
padding masked everywhere, value model initialised from the RM.

Several processes (ctx): each rolls out its share of every batch with its own seed, advantages are whitened
over the global batch, gradients all-reduced (DDP), statistics averaged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from tasks import losses
from tasks.label.gold import scored_text
from tasks.lm.generation import pack, response_logits, response_logprobs, sample
from tasks.lm.models import merged, sampling_copy
from tasks.rl.actors import Policy, RunningMoments, process_scores, ptx_batch, values_of
from tasks.rl.reward_spec import RM, combined, metric_name, reward_parts
from tasks.runtime.checkpoint import Checkpoint, decode_random_state, encode_random_state
from tasks.runtime.context import SINGLE_PROCESS, DistContext, autocast, to_device
from tasks.runtime.device import seed_everything
from tasks.train.reward_model import TokenScorer, sequence_rewards

RM_SCORE = "rm_score"  # the RM term's normalized score in the logs (the dvc plots and MLflow charts use it)


def rollout(
    pol: Policy,
    prompts: list,
    cfg,
    iteration: int,
    prompt_rng: random.Random,
    ctx: DistContext,
    device: str,
    dtype,
    group_size: int = 1,
) -> dict:
    """1. This process's share of a fresh batch of prompts and the policy's group_size responses to each (adjacent),
    packed for scoring."""
    n_prompts = cfg.rollout_batch_size // group_size
    batch_prompts = prompt_rng.sample(prompts, min(n_prompts, len(prompts)))[ctx.rank :: ctx.world]
    pol.model.eval()  # dropout is off and the policy in eval mode: log-probs match the sampler's
    seed = cfg.seed * 7919 + iteration + 104_729 * ctx.rank
    precision = cfg.rollout_precision
    if precision == "auto":
        precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    sampler = sampling_copy(pol.model, precision)
    responses = sample(
        sampler,
        pol.tok,
        batch_prompts,
        group_size,
        cfg.generation,
        seed,
        device,
        dtype if sampler is pol.model else torch.float32,  # a bf16 copy computes in its own precision
        cfg.max_prompt_len,
        desc=f"rollout {iteration + 1}",
    )
    packed = pack([r["query"] for r in responses], [r["response"] for r in responses], pol.tok.pad_token_id)
    ended = torch.tensor([r["ended"] for r in responses], device=device)
    return {
        "prompts": [batch_prompts[r["prompt_index"]] for r in responses],  # one per response
        "responses": responses,
        "packed": to_device(packed, device),
        "ended": ended,
    }


def score_rollout(pol: Policy, roll: dict, cfg, running: RunningMoments, device: str, dtype) -> dict:
    """2. Everything the update compares against, computed once with the weights that sampled; the reward's
    terms (RM and/or Python functions) and the score the policy optimizes."""
    packed, temperature = roll["packed"], cfg.generation.temperature
    with torch.no_grad(), autocast(device, dtype):
        old_logp = response_logprobs(pol.model, packed, temperature)
        ref_logp = pol.ref_logprobs(packed, temperature)
        old_values = values_of(pol.value, packed).float() if pol.value is not None else None
        raw = sequence_rewards(pol.rm, packed, pol.norm.get("pooling", "last")).float() if pol.rm is not None else None
    texts = [r["text"] for r in roll["responses"]]
    parts = reward_parts(cfg.reward, raw, pol.norm, pol.functions, roll["prompts"], texts, device)
    score = process_scores(combined(cfg.reward, parts), roll["ended"], cfg, running)
    return {"old_logp": old_logp, "ref_logp": ref_logp, "old_values": old_values, "parts": parts, "score": score}


def shape_rewards(roll: dict, scored: dict, cfg, beta: float, token_reward: Callable | None, ctx: DistContext) -> dict:
    """3.-4. Per-token rewards (KL penalty, RTO's token reward, the score at the end), advantages, returns."""
    packed, mask = roll["packed"], roll["packed"]["response_mask"]
    kl = losses.kl_estimate(scored["old_logp"], scored["ref_logp"], cfg.kl.estimator) * mask
    extra = token_reward(packed, scored["old_logp"], scored["ref_logp"]) if token_reward else None
    rewards = losses.token_rewards(kl, scored["score"], mask, beta, extra)
    advantages, returns = losses.gae(rewards, scored["old_values"], mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = losses.whiten(advantages, mask, all_sum=ctx.all_sum if ctx.accelerator else None)
    return {"kl": kl, "extra": extra, "rewards": rewards, "advantages": advantages, "returns": returns}


def update(
    nets: dict,
    optimizers: dict,
    roll: dict,
    scored: dict,
    shaped: dict,
    texts: list[str],
    cfg,
    prompt_rng: random.Random,
    ctx: DistContext,
    device: str,
    dtype,
    tok,
) -> dict[str, list[float]]:
    """5. cfg.ppo_epochs passes of minibatch steps on the clipped policy loss (+ the value loss with a critic,
    + the KL to SFT when it is a loss term, + PPO-ptx's LM loss)."""
    policy_net, value_net = nets["policy"], nets.get("value")
    kl_loss_coef = shaped.get("kl_loss_coef", 0.0)
    packed, temperature, n = roll["packed"], cfg.generation.temperature, len(roll["responses"])
    stats: dict[str, list[float]] = {}
    for _ in range(cfg.ppo_epochs):
        for idx in torch.randperm(n).split(cfg.minibatch_size // ctx.world):
            mb = {k: (v[idx] if torch.is_tensor(v) and v.shape[0] == n else v) for k, v in packed.items()}
            mask = mb["response_mask"]
            with autocast(device, dtype):
                logits = response_logits(policy_net, mb).float() / temperature
                logp = losses.token_logprobs(logits, mb["response"]) * mask
                pg_loss, pg_stats = losses.ppo_policy_loss(
                    logp, scored["old_logp"][idx], shaped["advantages"][idx], mask, cfg.clip, cfg.loss_aggregation
                )
                entropy = losses.masked_mean(losses.entropy_from_logits(logits), mask).item()
                loss = pg_loss
                if kl_loss_coef:  # GRPO: the KL to SFT on the current policy's log-probs, as a loss term
                    kl_t = losses.kl_estimate(logp, scored["ref_logp"][idx], cfg.kl.estimator) * mask
                    kl_loss = losses.aggregate(kl_t, mask, cfg.loss_aggregation)
                    loss = loss + kl_loss_coef * kl_loss
                    stats.setdefault("kl_loss", []).append(kl_loss.item())
                if cfg.ptx_coef > 0:  # PPO-ptx: keep the pretraining distribution's likelihood
                    ptx_texts = prompt_rng.sample(texts, min(cfg.ptx_batch_size, len(texts)))
                    batch = ptx_batch(ptx_texts[ctx.rank :: ctx.world] or ptx_texts, tok, cfg.ptx_max_length)
                    batch = to_device(batch, device)
                    lm_logits = policy_net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    ptx_loss = losses.sft_loss(lm_logits, batch["labels"])
                    loss = loss + cfg.ptx_coef * ptx_loss
                    stats.setdefault("ptx_loss", []).append(ptx_loss.item())
                step_stats = {"policy_loss": pg_loss.item(), "entropy": entropy, **pg_stats}
                if value_net is not None:
                    values = values_of(value_net, mb).float()
                    vf_loss, vf_stats = losses.value_loss(
                        values, scored["old_values"][idx], shaped["returns"][idx], mask, cfg.value_clip
                    )
                    loss = loss + cfg.vf_coef * vf_loss
                    step_stats |= {"value_loss": vf_loss.item(), **vf_stats}
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for net in nets.values():
                ctx.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], cfg.max_grad_norm)
            for opt in optimizers.values():
                opt.step()
            for k, v in step_stats.items():
                stats.setdefault(k, []).append(v)
    return stats


def iteration_metrics(
    iteration: int,
    roll: dict,
    scored: dict,
    shaped: dict,
    stats: dict,
    beta: float,
    gold_scorer: Callable | None,
    ctx: DistContext,
) -> dict:
    """What one iteration logs, averaged over the processes: the score and each reward term, the gold score, KL,
    β, the update's losses."""
    mask, rewards, extra = roll["packed"]["response_mask"], shaped["rewards"], shaped["extra"]
    terms = {(RM_SCORE if name == RM else metric_name(name)): v.mean().item() for name, v in scored["parts"].items()}
    row = {
        "iteration": iteration + 1,
        "step": iteration + 1,
        "score": scored["score"].mean().item(),
        **terms,
        "kl": shaped["kl"].sum(1).mean().item(),
        "beta": beta,
        "response_length": mask.sum(1).mean().item(),
        "eos_rate": roll["ended"].float().mean().item(),
        "reward_total": rewards.sum(1).mean().item(),
        **{k: sum(v) / len(v) for k, v in stats.items()},
    }
    if extra is not None:
        row["token_reward"] = (extra * mask).sum(1).mean().item()
        row["token_reward_share"] = (extra * mask).abs().sum().item() / (rewards.abs().sum().item() + 1e-8)
    if gold_scorer:
        pairs = zip(roll["prompts"], roll["responses"])
        row["gold_score"] = sum(gold_scorer(scored_text(p, r["text"])) for p, r in pairs) / len(roll["responses"])
    return ctx.reduce_mean(row)


def next_beta(beta: float, row: dict, cfg, episodes: int) -> float:
    """6. The KL controller on the observed sequence-level KL (sum over tokens, mean over the global batch)."""
    if not cfg.kl.adaptive:
        return beta
    return losses.adaptive_kl_update(beta, row["kl"], cfg.kl.target, cfg.kl.horizon, episodes)


def train_ppo(
    cfg,
    prompts: list,
    texts: list[str],
    sft_dir: Path,
    rm_dir: Path,
    device: str,
    dtype,
    ctx: DistContext = SINGLE_PROCESS,
    gold_scorer: Callable | None = None,
    token_reward: Callable | None = None,
    on_iter: Callable | None = None,
    stage: str = "ppo",
    checkpoint_dir: Path | None = None,
    shape: Callable = shape_rewards,
    group_size: int = 1,
) -> tuple[Policy, list[dict]]:
    """cfg.iterations iterations on `prompts` (and `texts` for PPO-ptx). Returns (policy, per-iteration history).

    token_reward(packed, logp, ref_logp) -> (B, L) adds a token-wise reward (RTO); None for PPO.
    shape: steps 3-4 (shape_rewards: per-token rewards + GAE, with a critic); the critic-free stages (GRPO,
    RLOO) give their group baseline here and sample group_size responses per prompt.
    """
    seed_everything(cfg.seed)
    pol = Policy(cfg, sft_dir, rm_dir, device, critic=shape is shape_rewards, section=stage)
    modules = {"policy": pol.model} | ({"value": pol.value} if pol.value is not None else {})
    lrs = {"policy": cfg.lr, "value": getattr(cfg, "value_lr", None)}
    optimizers = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lrs[name], eps=1e-5)
        for name, m in modules.items()
    }
    opt_keys = {"policy": "optimizer", "value": "value_optimizer"}  # their names in the checkpoint
    prompt_rng, running = random.Random(cfg.seed), RunningMoments()
    beta, history = cfg.kl.coef, []
    fingerprint = {
        "cfg": cfg.model_dump(exclude={"checkpoint_every", "checkpoint_minutes"}),
        "prompts": prompts,
        "texts": texts,
    }
    ckpt = Checkpoint(checkpoint_dir, stage, cfg.checkpoint_every, fingerprint, cfg.checkpoint_minutes)
    start = 0
    if state := ckpt.load(modules):
        for name, opt in optimizers.items():
            opt.load_state_dict(state[opt_keys[name]])
        prompt_rng.setstate(decode_random_state(state["prompt_rng"]))
        running.load_state(state["running"])
        start, beta, history = state["step"], state["beta"], state["history"]
    wrapped = {"policy": pol.model} | ({"value": TokenScorer(pol.value)} if pol.value is not None else {})
    prepared = ctx.prepare(*wrapped.values(), *optimizers.values())
    prepared = prepared if isinstance(prepared, tuple) else (prepared,)
    nets = dict(zip(wrapped, prepared[: len(wrapped)]))
    optimizers = dict(zip(optimizers, prepared[len(wrapped) :]))

    for it in tqdm(
        range(start, cfg.iterations),
        desc=stage,
        dynamic_ncols=True,
        initial=start,
        total=cfg.iterations,
        disable=not ctx.is_main,
    ):
        roll = rollout(pol, prompts, cfg, it, prompt_rng, ctx, device, dtype, group_size)
        scored = score_rollout(pol, roll, cfg, running, device, dtype)
        shaped = shape(roll, scored, cfg, beta, token_reward, ctx)
        for m in modules.values():
            m.train()
        stats = update(nets, optimizers, roll, scored, shaped, texts, cfg, prompt_rng, ctx, device, dtype, pol.tok)
        for m in modules.values():
            m.eval()
        row = iteration_metrics(it, roll, scored, shaped, stats, beta, gold_scorer, ctx)
        beta = next_beta(beta, row, cfg, episodes=len(roll["responses"]) * ctx.world)
        history.append(row)
        if on_iter:
            on_iter(it + 1, row)
        if ckpt.due(it + 1, ctx) and it + 1 < cfg.iterations and ctx.is_main:  # + KL controller, reward norm
            ckpt.save(
                it + 1,
                modules,
                {
                    **{opt_keys[name]: opt.state_dict() for name, opt in optimizers.items()},
                    "beta": beta,
                    "prompt_rng": encode_random_state(prompt_rng.getstate()),
                    "running": running.state(),
                    "history": history,
                },
            )
        ctx.barrier()
    pol.model = merged(pol.model)
    return pol, history
