"""The `dpo` stage's work: DPO / cDPO / IPO on the same labeled pairs the reward model saw.

The reference (SFT) log-probs of every chosen and rejected completion are computed once, before training,
by the SFT model itself (= the policy before its first step) and stored with the example; chosen and
rejected go through the policy in one concatenated forward pass.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from tasks.batching import encode_prompt
from tasks.common import read_jsonl, seed_everything
from tasks.generation import batched_logprobs, pack, response_logprobs
from tasks.losses import dpo_loss
from tasks.reward import is_heldout, response_ids
from tasks.sft import load_lm
from tasks.train import add_lora, fit, merged


def pair_examples(pairs: list[dict], tok, cfg) -> tuple[list[dict], list[dict]]:
    """(train, held-out) examples {query, chosen, rejected}; held-out prompts are the RM's held-out ones."""
    max_resp = cfg.max_length - cfg.max_prompt_len
    train, held = [], []
    for p in pairs:
        ex = {"query": encode_prompt(p["prompt"], tok, cfg.max_prompt_len),
              "chosen": response_ids(tok, p["chosen"], p["chosen_ended"], max_resp),
              "rejected": response_ids(tok, p["rejected"], p["rejected_ended"], max_resp)}
        (held if is_heldout(p["prompt_id"], cfg.heldout_frac) else train).append(ex)
    return train, held


def add_reference_logprobs(model, examples: list[dict], pad_id: int, cfg, device, dtype) -> None:
    """Store Σ_t log π_ref of chosen and rejected in each example (one forward per completion, ever)."""
    q = [e["query"] for e in examples]
    for side in ("chosen", "rejected"):
        lps = batched_logprobs(model, q, [e[side] for e in examples], pad_id, 1.0, cfg.eval_batch_size, device,
                               dtype, desc=f"reference log-probs ({side})")
        for e, lp in zip(examples, lps):
            e[f"ref_{side}"] = lp.sum().item()


def collate_pairs(examples: list[dict], pad_id: int) -> dict:
    """Chosen rows then rejected rows in one packed batch (one forward pass for both)."""
    batch = pack([e["query"] for e in examples] * 2, [e["chosen"] for e in examples] +
                 [e["rejected"] for e in examples], pad_id)
    batch["ref_chosen"] = torch.tensor([e["ref_chosen"] for e in examples])
    batch["ref_rejected"] = torch.tensor([e["ref_rejected"] for e in examples])
    return batch


def dpo_step(model, batch, cfg):
    seq = response_logprobs(model, batch).sum(1)
    lengths = batch["response_mask"].sum(1)
    n = seq.shape[0] // 2
    loss, rc, rr = dpo_loss(seq[:n], seq[n:], batch["ref_chosen"], batch["ref_rejected"], cfg.beta, cfg.loss_type,
                            cfg.label_smoothing, lengths[:n], lengths[n:])
    return loss, {"reward_chosen": rc.mean().item(), "reward_rejected": rr.mean().item(),
                  "reward_accuracy": (rc > rr).float().mean().item(), "reward_margin": (rc - rr).mean().item()}


@torch.no_grad()
def implicit_accuracy(model, examples: list[dict], pad_id: int, cfg, device, dtype) -> float:
    """Share of pairs whose implicit reward β(log π − log π_ref) ranks chosen above rejected."""
    q = [e["query"] for e in examples]
    c = batched_logprobs(model, q, [e["chosen"] for e in examples], pad_id, 1.0, cfg.eval_batch_size, device, dtype)
    r = batched_logprobs(model, q, [e["rejected"] for e in examples], pad_id, 1.0, cfg.eval_batch_size, device, dtype)
    wins = [(a.sum().item() - e["ref_chosen"]) > (b.sum().item() - e["ref_rejected"]) for a, b, e in zip(c, r, examples)]
    return sum(wins) / max(len(wins), 1)


def train_dpo(cfg, sft_dir: Path, pairs_path: Path, out_dir: Path, device: str, dtype, on_step=None) -> dict:
    seed_everything(cfg.seed)
    model, tok = load_lm(sft_dir, device)
    train, held = pair_examples(read_jsonl(pairs_path), tok, cfg)
    add_reference_logprobs(model, train + held, tok.pad_token_id, cfg, device, dtype)  # before any update
    model = add_lora(model, cfg.lora)
    history = fit(model, train, partial(collate_pairs, pad_id=tok.pad_token_id), partial(dpo_step, cfg=cfg), cfg,
                  device, dtype, on_step=on_step, desc=f"dpo ({cfg.loss_type})")
    model = merged(model)
    metrics = {"heldout_reward_accuracy": implicit_accuracy(model, held, tok.pad_token_id, cfg, device, dtype),
               "train_loss_last": history[-1]["loss"], "steps": len(history), "n_train_pairs": len(train),
               "n_heldout_pairs": len(held)}
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return {"metrics": metrics, "history": history}
