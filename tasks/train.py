"""The one training loop (SFT, reward model, DPO): seeded shuffling, micro-batches, AdamW with cosine
decay, gradient clipping, mixed precision on GPUs, a progress bar, and a per-step metrics callback.

A stage supplies `loss_fn(model, micro_batch) -> (loss, {metric: float})`; everything else is here.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Callable

import torch
from tqdm import tqdm


def disable_dropout(model) -> None:
    """RLHF practice: no dropout anywhere, so log-probs of the same tokens are deterministic."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        cfg = getattr(m, "config", None)  # attention dropout is functional: it reads the config
        for k, v in (vars(cfg) if hasattr(cfg, "__dict__") else {}).items():
            if "dropout" in k and isinstance(v, float):
                setattr(cfg, k, 0.0)


def add_lora(model, lora_cfg, task_type: str = "CAUSAL_LM"):
    """Wrap with a peft LoRA adapter when asked; returns the (possibly wrapped) model."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=0.0,
                                            target_modules=lora_cfg.target_modules, task_type=task_type))


def merged(model):
    """A plain transformers model: LoRA adapters merged into the weights (what models/<stage> stores)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_pretrained(model, tok, out_dir) -> None:
    """models/<stage>: safetensors + tokenizer, written by rank 0 alone when several processes train."""
    from tasks.distributed import is_main

    if is_main():
        model.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)


def autocast(device: str, dtype: torch.dtype):
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)


def to_device(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def num_steps(n_items: int, cfg) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(n_items / cfg.batch_size)))


def batches(items: list, cfg, seed: int):
    """Endless seeded reshuffles of `items`, cut into lists of cfg.batch_size."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(items), generator=g).tolist()
        bs = min(cfg.batch_size, len(perm))
        for i in range(0, len(perm) - bs + 1, bs):  # the last incomplete batch is dropped
            yield [items[j] for j in perm[i: i + bs]]


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
    slices = [batch[i: i + size] for i in range(0, len(batch), size)]
    return slices[rank * grad_accum: (rank + 1) * grad_accum]


def fit(model, items: list, collate: Callable[[list], dict], loss_fn: Callable, cfg, device: str,
        dtype: torch.dtype, on_step: Callable[[int, dict], None] | None = None, desc: str = "train") -> list[dict]:
    """Train `model` in place on `items`; return the per-step metrics.

    Under `accelerate launch` (compute.num_processes > 1) the model is wrapped by Accelerate (DDP, or what
    its config file says), each process trains on its slice of every global batch (my_micro_batches), the
    step metrics are averaged over processes and only rank 0 writes checkpoints.

    With cfg.checkpoint_every > 0 the whole state (weights, optimizer, scheduler, RNG, data position,
    history) is saved every N steps to .checkpoints/<stage>/ (stage: desc's first word), and a rerun under the same params and data
    resumes there: the seeded batch order is replayed and the finished steps skipped.
    """
    from transformers import get_cosine_schedule_with_warmup

    from tasks import distributed
    from tasks.checkpoint import Checkpoint

    model.to(device).train()
    disable_dropout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = num_steps(len(items), cfg)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    stage = desc.split()[0]
    ckpt = Checkpoint(stage, getattr(cfg, "checkpoint_every", 0), {
        "cfg": cfg.model_dump(exclude={"checkpoint_every"}), "items": hashlib.sha256(repr(items).encode()).hexdigest()})
    start, history = 0, []
    if state := ckpt.load({"model": model}):
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["step"], state["history"]
    acc, (rank, world) = distributed.accelerator(), distributed.rank_and_world()
    # net: what the loss sees (the DDP/FSDP wrapper under accelerate); the scheduler keeps the raw optimizer
    # (a prepared scheduler would step once per process)
    net, step_opt = acc.prepare(model, opt) if acc else (model, opt)
    it = batches(items, cfg, cfg.seed)
    for _ in range(start):  # data position: the same seeded order, the finished steps' batches skipped
        next(it)
    bar = tqdm(range(start, total), desc=desc, dynamic_ncols=True, initial=start, total=total,
               disable=not distributed.is_main())
    for step in bar:
        micro = my_micro_batches(next(it), cfg.grad_accum, rank, world)
        sums: dict[str, float] = {}
        for i, mb in enumerate(micro):
            # gradients are all-reduced once, after the last micro-batch
            with (acc.no_sync(net) if acc and i < len(micro) - 1 else contextlib.nullcontext()):
                with autocast(device, dtype):
                    loss, metrics = loss_fn(net, to_device(collate(mb), device))
                (loss / len(micro)).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v / len(micro)
        clip = acc.clip_grad_norm_ if acc else torch.nn.utils.clip_grad_norm_
        grad_norm = clip([p for p in net.parameters() if p.requires_grad], cfg.max_grad_norm).item()
        step_opt.step()
        sched.step()
        step_opt.zero_grad(set_to_none=True)
        row = {"step": step + 1, **distributed.reduce_mean(sums), "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if on_step:
            on_step(step + 1, row)
        if ckpt.due(step + 1) and step + 1 < total:
            if distributed.is_main():
                ckpt.save(step + 1, {"model": model}, {"optimizer": opt.state_dict(),
                                                       "scheduler": sched.state_dict(), "history": history})
            distributed.barrier()
    model.eval()
    return history


@torch.no_grad()
def heldout_nll(model, examples: list[dict], collate: Callable[[list], dict], batch_size: int, device: str,
                dtype: torch.dtype, desc: str = "held-out loss") -> float:
    """Per-token mean NLL of the labeled tokens of `examples` (completion tokens, or all text tokens)."""
    from tasks.losses import completion_nll

    model.to(device).eval()
    total, count = 0.0, 0
    for i in tqdm(range(0, len(examples), batch_size), desc=desc, dynamic_ncols=True, leave=False):
        batch = to_device(collate(examples[i: i + batch_size]), device)
        with autocast(device, dtype):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        s, n = completion_nll(logits, batch["labels"])
        total, count = total + s.item(), count + n.item()
    return total / max(count, 1)
