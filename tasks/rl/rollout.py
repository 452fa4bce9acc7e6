"""Steps 1-2 of an online iteration (tasks/rl/ppo.py): sample responses from the policy, then score them once
with the weights that sampled. What they hand on is typed: a `Rollout`, then its `Scores`.

Shapes: N = this process's responses in the iteration (rollout_batch_size / world), L = the longest response.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tasks.lm.generation import pack, response_logprobs, sample
from tasks.lm.models import sampling_copy
from tasks.rl.actors import Policy, RunningMoments, process_scores, values_of
from tasks.rl.reward_spec import combined, reward_parts
from tasks.runtime.context import RunContext, to_device
from tasks.train.reward_model import sequence_rewards


@dataclass(frozen=True)
class Rollout:
    """One iteration's episodes on this process."""

    prompts: list  # (N,) the prompt of each response (a prompt's group_size responses adjacent)
    responses: list[dict]  # (N,) what the sampler gave: query and response token ids, text, ended
    packed: dict  # input_ids / attention_mask / position_ids (N, P + L), response and response_mask (N, L), P
    ended: torch.Tensor  # (N,) bool: the response ended on EOS

    @property
    def mask(self) -> torch.Tensor:
        """(N, L) 1 on response tokens, 0 on padding."""
        return self.packed["response_mask"]

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.responses]


@dataclass(frozen=True)
class Scores:
    """What the update compares against, computed once with the weights that sampled."""

    old_logp: torch.Tensor  # (N, L) log π_old of each response token (sampling temperature)
    ref_logp: torch.Tensor  # (N, L) log π_SFT of the same tokens
    old_values: torch.Tensor | None  # (N, L) the critic's V(s_t); None without a critic
    parts: dict[str, torch.Tensor]  # {reward term: (N,)}: the RM's normalized score, each function's
    score: torch.Tensor  # (N,) the score the policy optimizes (weighted sum, EOS penalty, norm, clip)


def rollout(pol: Policy, prompts: list, cfg, iteration: int, prompt_rng: random.Random, ctx: RunContext) -> Rollout:
    """1. This process's share of a fresh batch of prompts and the policy's group_size responses to each."""
    n_prompts = cfg.rollout_batch_size // cfg.group_size
    batch_prompts = prompt_rng.sample(prompts, min(n_prompts, len(prompts)))[ctx.rank :: ctx.world]
    pol.model.eval()  # dropout is off and the policy in eval mode: log-probs match the sampler's
    seed = cfg.seed * 7919 + iteration + 104_729 * ctx.rank
    precision = cfg.rollout_precision
    if precision == "auto":
        precision = "bf16" if ctx.dtype == torch.bfloat16 else "fp32"
    sampler = sampling_copy(pol.model, precision)
    sampler_ctx = ctx if sampler is pol.model else ctx.with_dtype(torch.float32)  # a bf16 copy computes in its own
    responses = sample(
        sampler, pol.tok, batch_prompts, cfg.group_size, cfg.generation, seed, sampler_ctx, cfg.max_prompt_len
    )
    packed = pack([r["query"] for r in responses], [r["response"] for r in responses], pol.tok.pad_token_id)
    return Rollout(
        prompts=[batch_prompts[r["prompt_index"]] for r in responses],
        responses=responses,
        packed=to_device(packed, ctx.device),
        ended=torch.tensor([r["ended"] for r in responses], device=ctx.device),
    )


def score_rollout(pol: Policy, roll: Rollout, cfg, running: RunningMoments, ctx: RunContext) -> Scores:
    """2. Old and reference log-probs, the critic's values, the reward's terms and the score it optimizes."""
    packed, temperature = roll.packed, cfg.generation.temperature
    with torch.no_grad(), ctx.autocast():
        old_logp = response_logprobs(pol.model, packed, temperature)
        ref_logp = pol.ref_logprobs(packed, temperature)
        old_values = values_of(pol.value, packed).float() if pol.value is not None else None
        raw = sequence_rewards(pol.rm, packed, pol.norm.get("pooling", "last")).float() if pol.rm is not None else None
    parts = reward_parts(cfg.reward, raw, pol.norm, pol.functions, roll.prompts, roll.texts, ctx.device)
    score = process_scores(combined(cfg.reward, parts), roll.ended, cfg, running)
    return Scores(old_logp=old_logp, ref_logp=ref_logp, old_values=old_values, parts=parts, score=score)
