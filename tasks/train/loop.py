"""The one training loop (SFT, reward model, DPO): seeded shuffling, micro-batches, AdamW with cosine
decay, gradient clipping, mixed precision, a progress bar, resumable checkpoints and a per-step callback.

A stage supplies `loss_fn(model, micro_batch) -> (loss, {metric: float})`; everything else is here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from tasks.lm.models import disable_dropout
from tasks.losses import completion_nll
from tasks.runtime.checkpoint import Checkpoint
from tasks.runtime.context import SINGLE_PROCESS, RunContext, to_device


def num_steps(n_items: int, cfg) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(n_items / cfg.batch_size)))


def batches(items: list, cfg, seed: int):
    """Endless seeded reshuffles of `items`, cut into lists of cfg.batch_size."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(items), generator=g).tolist()
        bs = min(cfg.batch_size, len(perm))
        for i in range(0, len(perm) - bs + 1, bs):  # the last incomplete batch is dropped
            yield [items[j] for j in perm[i : i + bs]]


def items_seen(n_items: int, cfg) -> list[int]:
    """Indices (sorted) of the items `fit` draws in its num_steps steps: its seeded batch order, replayed."""
    order = batches(list(range(n_items)), cfg, cfg.seed)
    return sorted({i for _ in range(num_steps(n_items, cfg)) for i in next(order)})


def my_micro_batches(batch: list, grad_accum: int, rank: int = 0, world: int = 1) -> list[list]:
    """This process's micro-batches of a global batch: the batch is cut into world x grad_accum equal
    slices and process r takes slices r*grad_accum ... (r+1)*grad_accum - 1. Each backward is scaled by
    1/grad_accum and DDP averages over processes, so every process count gives the mean of the same
    slices' losses: N processes match one process with grad_accum x N (same batches, same seed)."""
    n = world * grad_accum
    size = math.ceil(len(batch) / n)
    slices = [batch[i : i + size] for i in range(0, len(batch), size)]
    return slices[rank * grad_accum : (rank + 1) * grad_accum]


def fit(
    model,
    items: list,
    collate: Callable[[list], dict],
    loss_fn: Callable,
    cfg,
    ctx: RunContext = SINGLE_PROCESS,
    stage: str = "train",
    hooks: dict | None = None,
) -> list[dict]:
    """Train `model` in place on `items`; return the per-step metrics.

    Several processes (ctx): the model is wrapped by Accelerate (DDP, or what its config file says), each
    process trains on its slice of every global batch (my_micro_batches), the step metrics are averaged over
    processes and only rank 0 writes checkpoints.

    hooks: on_step(step, row) after every optimizer step; desc, the progress bar's label (default: the stage).
    With cfg.checkpoint_every > 0 and hooks' checkpoint_dir, the whole state (weights, optimizer, scheduler, RNG,
    data position, history) is saved there every N steps, and a rerun under the same params and data resumes:
    the seeded batch order is replayed and the finished steps skipped.
    """
    from transformers import get_cosine_schedule_with_warmup

    hooks = hooks or {}
    on_step, desc = hooks.get("on_step"), hooks.get("desc")

    model.to(ctx.device).train()
    disable_dropout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = num_steps(len(items), cfg)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    fingerprint = {
        "cfg": cfg.model_dump(exclude={"checkpoint_every", "checkpoint_minutes"}),
        "items": hashlib.sha256(repr(items).encode()).hexdigest(),
    }
    ckpt = Checkpoint(hooks.get("checkpoint_dir"), stage, cfg.checkpoint_every, fingerprint, cfg.checkpoint_minutes)
    start, history = 0, []
    if state := ckpt.load({"model": model}):
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["step"], state["history"]
    # net: what the loss sees (the DDP/FSDP wrapper under accelerate); the scheduler keeps the raw optimizer
    # (a prepared scheduler would step once per process)
    net, step_opt = ctx.prepare(model, opt)
    batch_stream = batches(items, cfg, cfg.seed)
    for _ in range(start):  # data position: the same seeded order, the finished steps' batches skipped
        next(batch_stream)
    bar = tqdm(
        range(start, total), desc=desc or stage, dynamic_ncols=True, initial=start, total=total, disable=not ctx.is_main
    )
    for step in bar:
        micro = my_micro_batches(next(batch_stream), cfg.grad_accum, ctx.rank, ctx.world)
        sums: dict[str, float] = {}
        for i, mb in enumerate(micro):
            with ctx.no_sync(net, skip_all_reduce=i < len(micro) - 1):  # all-reduce after the last micro-batch
                with ctx.autocast():
                    loss, metrics = loss_fn(net, to_device(collate(mb), ctx.device))
                (loss / len(micro)).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v / len(micro)
        trainable = [p for p in net.parameters() if p.requires_grad]
        grad_norm = ctx.clip_grad_norm_(trainable, cfg.max_grad_norm).item()
        step_opt.step()
        sched.step()
        step_opt.zero_grad(set_to_none=True)
        row = {"step": step + 1, **ctx.reduce_mean(sums), "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if on_step:
            on_step(step + 1, row)
        if ckpt.due(step + 1, ctx) and step + 1 < total:
            if ctx.is_main:
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history}
                ckpt.save(step + 1, {"model": model}, state)
            ctx.barrier()
    model.eval()
    return history


@torch.no_grad()
def heldout_nll(
    model,
    examples: list[dict],
    collate: Callable[[list], dict],
    batch_size: int,
    ctx: RunContext = SINGLE_PROCESS,
    desc: str = "held-out loss",
) -> float:
    """Per-token mean NLL of the labeled tokens of `examples` (completion tokens, or all text tokens)."""
    model.to(ctx.device).eval()
    total, count = 0.0, 0
    for i in tqdm(range(0, len(examples), batch_size), desc=desc, dynamic_ncols=True, leave=False):
        batch = to_device(collate(examples[i : i + batch_size]), ctx.device)
        with ctx.autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        s, n = completion_nll(logits, batch["labels"])
        total, count = total + s.item(), count + n.item()
    return total / max(count, 1)
