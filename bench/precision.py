"""fp32 vs bf16 autocast on this CPU: a scoring forward pass (16 x 96 tokens) and a training step (8 x 96
tokens, forward + backward + AdamW), same model, same batch, each timed REPS times after a warm-up.

    python -m bench.precision <model dir>    -> one JSON line

bf16 is what `compute.precision: auto` picks on a CPU with bf16 units (amx_bf16 / avx512_bf16); the heads
(LM head, scalar heads) stay fp32 as in the pipeline (tasks/lm/models.py: FP32Linear). On a CPU without bf16
units the bf16 column is the emulated speed, which is why auto picks fp32 there. The ratios are fp32 time ÷
bf16 time (> 1: bf16 is faster).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

REPS = 5
SCORE_BATCH, TRAIN_BATCH, TOKENS = 16, 8, 96


def median_seconds(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(model_dir: str) -> dict:
    from tasks.lm.models import load_lm
    from tasks.runtime.context import autocast
    from tasks.runtime.device import cpu_bf16_native

    model, _ = load_lm(model_dir)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    score_ids = torch.randint(0, vocab, (SCORE_BATCH, TOKENS), generator=g)
    train_ids = torch.randint(0, vocab, (TRAIN_BATCH, TOKENS), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    out = {"bf16_native": cpu_bf16_native()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):

        @torch.no_grad()
        def forward(dtype=dtype):
            with autocast("cpu", dtype):
                model(input_ids=score_ids).logits.float().log_softmax(-1)

        def train_step(dtype=dtype):
            with autocast("cpu", dtype):
                loss = model(input_ids=train_ids, labels=train_ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        model.eval()
        out[f"forward_{name}_s"] = median_seconds(forward)
        model.train()
        out[f"train_step_{name}_s"] = median_seconds(train_step)
    out["forward_ratio"] = out["forward_fp32_s"] / out["forward_bf16_s"]
    out["train_step_ratio"] = out["train_step_fp32_s"] / out["train_step_bf16_s"]
    out.update(reps=REPS, score_batch=[SCORE_BATCH, TOKENS], train_batch=[TRAIN_BATCH, TOKENS])
    return out


if __name__ == "__main__":
    print("BENCH " + json.dumps(measure(sys.argv[1])))
