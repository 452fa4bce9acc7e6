"""Rollout throughput: our generation module (tasks.lm.generation.sample) vs a plain `model.generate` loop,
same prompts, sampling settings (T = 1, top_k 0, top_p 1, 32 new tokens, stop at EOS), seeded; ours with
the fp32 policy and with its bf16 and int8 sampling copies (ppo.rollout_precision; on a CPU without bf16
units their speed is the emulated one), each copy's mean per-token KL to the fp32 policy beside it.

    python -m bench.rollout <model dir> <batch sizes, comma-separated> <prompts>   -> one JSON line

Tokens counted are generated tokens up to and including EOS. Our module adds prompt encoding through the
chat template, EOS cutting and decoding on top of `generate`, and draws each token by inverse-CDF sampling
(one uniform per row) instead of `torch.multinomial` (one exponential per vocabulary entry on CPU). It also
runs at larger batches in the pipeline (sample: 96, ppo: 32, eval: 64), so the table also reports ours at
the pipeline's batch against plain generate at 8.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from bench.dpo import peak_rss_mb

NEW_TOKENS = 32


def prompts_from_corpus(n: int) -> list[str]:
    from flows.paths import ROOT
    from tasks.runtime.files import read_jsonl

    return [" ".join(r["text"].split()[:5]) for r in read_jsonl(ROOT / "data/reviews.jsonl")[:n]]


def plain_generate(model, tok, prompts: list[str], batch: int) -> int:
    """What a user writes: tokenize a batch (left padding), generate, count new tokens to EOS."""
    from tasks.lm.batching import render_prompt

    tok.padding_side = "left"
    n = 0
    for i in range(0, len(prompts), batch):
        enc = tok(
            [render_prompt(p, tok) for p in prompts[i : i + batch]],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        torch.manual_seed(i)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=NEW_TOKENS,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )[:, enc["input_ids"].shape[1] :].tolist()
        n += sum(r.index(tok.eos_token_id) + 1 if tok.eos_token_id in r else len(r) for r in out)
    return n


def ours(model, tok, prompts: list[str], batch: int) -> int:
    from tasks.lm.generation import sample
    from tasks.sections.data import Generation

    cfg = Generation(max_new_tokens=NEW_TOKENS, temperature=1.0, top_k=0, top_p=1.0, batch_size=batch)
    return sum(len(r["response"]) for r in sample(model, tok, prompts, 1, cfg, seed=0))


def profile(model, tok, prompts: list[str]) -> dict:
    """Where a batch-8 rollout's time goes: torch.profiler's top ops by self CPU time (share of the total)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        plain_generate(model, tok, prompts[:8], 8)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    matmul = sum(
        e.self_cpu_time_total
        for e in ops
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")
    )
    return {
        "matmul_share": matmul / total,
        "ops": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in ops[:8]],
    }


def timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t0, n


def copy_kl(model, copy, tok, prompts: list[str]) -> float:
    """Mean per-token KL(policy || sampling copy) of next-token distributions on the policy's own samples."""
    from tasks.lm.generation import pack, response_logits, sample
    from tasks.sections.data import Generation

    cfg = Generation(max_new_tokens=NEW_TOKENS, temperature=1.0, top_k=0, top_p=1.0, batch_size=16)
    s = sample(model, tok, prompts, 1, cfg, seed=1)
    packed = pack([r["query"] for r in s], [r["response"] for r in s], tok.pad_token_id)
    with torch.no_grad():
        lp = response_logits(model, packed).float().log_softmax(-1)
        lq = response_logits(copy, packed).float().log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return float((kl * packed["response_mask"]).sum() / packed["response_mask"].sum())


if __name__ == "__main__":
    from tasks.lm.models import load_lm, sampling_copy

    model_dir, sizes, n_prompts = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3])
    model, tok = load_lm(model_dir)
    model.eval()
    prompts = prompts_from_corpus(n_prompts)
    # bf16 (and int8's bf16 activations) emulated where the CPU has no bf16 units
    copies = {p: sampling_copy(model, p) for p in ("fp32", "bf16", "int8")}
    for m in copies.values():
        timed(ours, m, tok, prompts[:4], 4)  # warm-up (allocator, kernels, quantized packing)
    rows = []
    for b in sizes:
        sides = [("plain_generate", plain_generate, model)] + [
            ("ours" if p == "fp32" else f"ours_{p}", ours, m) for p, m in copies.items()
        ]
        for side, fn, m in sides:
            s, n = timed(fn, m, tok, prompts, b)
            rows.append({"side": side, "batch": b, "seconds": s, "tokens": n, "tokens_per_s": n / s})
    print(
        "BENCH "
        + json.dumps(
            {
                "rows": rows,
                "copy_kl_per_token": {
                    p: copy_kl(model, m, tok, prompts[:16]) for p, m in copies.items() if p != "fp32"
                },
                "profile_batch8": profile(model, tok, prompts),
                "prompts": n_prompts,
                "new_tokens": NEW_TOKENS,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
