"""The `dpo` stage's work: DPO / cDPO / IPO on the same labeled comparisons the reward model saw.

Comparisons are grouped by prompt like the RM's (K completions -> all K-choose-2 labeled pairs), so each
completion goes through the model once per step however many pairs it is in: with K = 4 a batch of 16
sequences gives 24 pairs, where chosen/rejected rows per pair would need 48. The loss is the same mean
over pairs either way. The reference (SFT) log-prob of every completion is computed once, before
training, by the SFT model itself (= the policy before its first step), for the groups training will reach.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from tasks.lm.batching import regroup
from tasks.lm.generation import batched_logprobs, response_logprobs
from tasks.lm.models import add_lora, load_lm, merged, save_pretrained
from tasks.losses import dpo_loss
from tasks.runtime.context import SINGLE_PROCESS, RunContext
from tasks.runtime.device import seed_everything
from tasks.runtime.result import TrainResult
from tasks.train.comparisons import ComparisonGroup, accuracies, best_vs_worst, build_groups, collate_groups
from tasks.train.loop import fit, items_seen


def sequence_logprobs(
    model, groups: list[ComparisonGroup], pad_id: int, cfg, ctx: RunContext, desc=None
) -> list[list[float]]:
    """Σ_t log π(y_t | x, y_<t) of every completion of every group (forward only), in group order."""
    queries = [g.query for g in groups for _ in g.responses]
    responses = [resp for g in groups for resp in g.responses]
    token_logps = batched_logprobs(model, queries, responses, pad_id, 1.0, cfg.eval_batch_size, ctx, desc=desc)
    return regroup([lp.sum().item() for lp in token_logps], [len(g.responses) for g in groups])


def with_reference_logprobs(model, groups: list[ComparisonGroup], pad_id: int, cfg, ctx: RunContext):
    """The groups with log π_ref of each completion (one forward per completion, ever)."""
    refs = sequence_logprobs(model, groups, pad_id, cfg, ctx, "reference log-probs")
    return [replace(g, ref=ref) for g, ref in zip(groups, refs)]


def collate_dpo(groups: list[ComparisonGroup], pad_id: int) -> dict:
    """Every completion of the groups once (collate_groups) + their reference log-probs."""
    batch = collate_groups(groups, pad_id)
    batch["ref"] = torch.tensor([x for g in groups for x in g.ref])
    return batch


def dpo_step(model, batch, cfg):
    """Mean DPO loss over every labeled pair in the batch; stats of the implicit rewards."""
    seq = response_logprobs(model, batch).sum(1)
    lengths = batch["response_mask"].sum(1)
    c, r, ref = batch["chosen"], batch["rejected"], batch["ref"]
    loss, rc, rr = dpo_loss(
        seq[c], seq[r], ref[c], ref[r], cfg.kl_coef, cfg.loss_type, cfg.label_smoothing, (lengths[c], lengths[r])
    )
    return loss, {
        "reward_chosen": rc.mean().item(),
        "reward_rejected": rr.mean().item(),
        "reward_accuracy": (rc > rr).float().mean().item(),
        "reward_margin": (rc - rr).mean().item(),
        "pairs": float(len(c)),
        "sequences": float(len(seq)),
    }


def implicit_accuracy(model, groups: list[ComparisonGroup], pad_id: int, cfg, ctx: RunContext) -> dict:
    """Share of pairs whose implicit reward β(log π − log π_ref) ranks them like the label (accuracy) and
    like the noiseless gold order (gold_accuracy, when the pairs carry gold scores)."""
    lps = sequence_logprobs(model, groups, pad_id, cfg, ctx, "held-out implicit rewards")
    return accuracies(groups, [[a - b for a, b in zip(lp, g.ref)] for lp, g in zip(lps, groups)])


def train_dpo(
    cfg,
    sft_dir: Path,
    pairs: list[dict],
    out_dir: Path,
    ctx: RunContext = SINGLE_PROCESS,
    on_step=None,
    checkpoint_dir: Path | None = None,
    ref_dir: Path | None = None,
) -> TrainResult:
    """DPO from the model in sft_dir on labeled pairs; save to out_dir. The reference is the starting model, or
    ref_dir's (a later round that continues its previous policy keeps SFT as the reference)."""
    seed_everything(cfg.seed)
    model, tok = load_lm(sft_dir, ctx.device)
    reference = load_lm(ref_dir, ctx.device)[0] if ref_dir is not None and Path(ref_dir) != Path(sft_dir) else model
    train, held = build_groups(pairs, tok, cfg)
    if cfg.pairs == "max_min":  # held-out accuracy stays on every labeled pair
        train = [best_vs_worst(g) for g in train]
    # before any update, and only for what will be read: max_steps can stop training before it reaches
    # every group, and then only the groups its seeded batches draw need a reference log-prob
    seen = items_seen(len(train), cfg)
    with_ref = with_reference_logprobs(reference, [train[i] for i in seen] + held, tok.pad_token_id, cfg, ctx)
    del reference
    for i, g in zip(seen, with_ref):
        train[i] = g
    held = with_ref[len(seen) :]
    model = add_lora(model, cfg.lora)
    history = fit(
        model,
        train,
        partial(collate_dpo, pad_id=tok.pad_token_id),
        partial(dpo_step, cfg=cfg),
        cfg,
        ctx,
        stage="dpo",
        hooks={"on_step": on_step, "checkpoint_dir": checkpoint_dir, "desc": f"dpo ({cfg.loss_type})"},
    )
    model = merged(model)
    metrics = {f"heldout_{k}": v for k, v in implicit_accuracy(model, held, tok.pad_token_id, cfg, ctx).items()}
    metrics = {
        "heldout_reward_accuracy": metrics.pop("heldout_accuracy"),
        **metrics,
        "train_loss_last": history[-1]["loss"],
        "steps": len(history),
        "n_train_pairs": sum(len(g.pairs) for g in train),
        "n_train_completions": sum(len(g.responses) for g in train),
    }
    save_pretrained(model, tok, out_dir, ctx)
    return TrainResult(str(out_dir), history, metrics)
