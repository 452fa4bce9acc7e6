"""DPO training throughput: our dpo stage's training step vs TRL's DPOTrainer, same model, data, pairs per
step, lengths, fp32, loss (sigmoid, β = 0.1), AdamW and lr. Reference log-probs are precomputed on both
sides (ours always does; TRL with precompute_ref_log_probs=True), so the timed step is policy forward +
backward + optimizer step.

    python -m bench.dpo {ours|trl} <model dir> <prompts per step> <steps>    -> one JSON line

Each side runs in its own process (python -m bench runs both), so its peak RSS is its own.
The data: K = 4 completions per prompt from the committed corpus, all 6 pairs of a prompt labeled by a
seeded coin (timing does not depend on which side wins). Ours sends each completion through the model
once per step (4 sequences for 6 pairs); TRL sends each pair's chosen and rejected rows (12 sequences).
"""

from __future__ import annotations

import itertools
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 2
K = 4


def comparison_pairs(n_prompts: int, seed: int = 0) -> list[dict]:
    """n_prompts x 6 pairs in the sample stage's format, from the corpus (prompt: a review's first words;
    completions: the next ~20 words of four reviews)."""
    from flows.paths import ROOT
    from tasks.runtime.files import read_jsonl

    rng = random.Random(seed)
    reviews = [r["text"].split() for r in read_jsonl(ROOT / "data/reviews.jsonl")]
    rows = []
    for i in range(n_prompts):
        words = reviews[(i * K) % len(reviews)]
        prompt = " ".join(words[:5])
        comps = [" " + " ".join(reviews[(i * K + j) % len(reviews)][5:25]) for j in range(K)]
        for a, b in itertools.combinations(range(K), 2):
            c, r = (a, b) if rng.random() < 0.5 else (b, a)
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "prompt": prompt,
                    "chosen": comps[c],
                    "rejected": comps[r],
                    "chosen_ended": False,
                    "rejected_ended": False,
                }
            )
    return rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(model_dir: str, prompts_per_step: int, steps: int) -> dict:
    from functools import partial

    from tasks.lm.models import load_lm
    from tasks.runtime.context import SINGLE_PROCESS
    from tasks.sections.training import DPOConfig
    from tasks.train.comparisons import build_groups
    from tasks.train.dpo import collate_dpo, dpo_step, with_reference_logprobs
    from tasks.train.loop import fit

    cfg = DPOConfig(
        kl_coef=0.1,
        loss_type="sigmoid",
        batch_size=prompts_per_step,
        max_steps=WARMUP + steps,
        lr=5e-5,
        warmup_ratio=0.0,
        max_length=112,
        max_prompt_len=64,
        checkpoint_every=0,
        heldout_frac=1e-9,
    )
    model, tok = load_lm(Path(model_dir))
    groups, _ = build_groups(comparison_pairs(prompts_per_step * (WARMUP + steps)), tok, cfg)
    groups = with_reference_logprobs(model, groups, tok.pad_token_id, cfg, SINGLE_PROCESS)
    stamps = [time.perf_counter()]
    fit(
        model,
        groups,
        partial(collate_dpo, pad_id=tok.pad_token_id),
        partial(dpo_step, cfg=cfg),
        cfg,
        SINGLE_PROCESS,
        hooks={"on_step": lambda s, row: stamps.append(time.perf_counter()), "desc": "bench dpo (ours)"},
    )
    seqs = sum(len(g.responses) for g in groups[:prompts_per_step])
    tokens = sum(len(g["query"]) + len(r) for g in groups for r in g["responses"]) / sum(
        len(g["responses"]) for g in groups
    )
    return _result("ours", stamps, prompts_per_step * 6, seqs, tokens)


def run_trl(model_dir: str, prompts_per_step: int, steps: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tasks.lm.batching import render_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32", use_safetensors=True)
    pairs = comparison_pairs(prompts_per_step * (WARMUP + steps))
    # the same prompt text our side encodes (rendered with the chat template where the model has one)
    data = Dataset.from_list(
        [{"prompt": render_prompt(p["prompt"], tok), "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    )
    stamps = [time.perf_counter()]

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=prompts_per_step * 6,
            max_steps=WARMUP + steps,
            learning_rate=5e-5,
            lr_scheduler_type="cosine",
            warmup_steps=0,
            beta=0.1,
            loss_type=["sigmoid"],
            max_length=112,
            precompute_ref_log_probs=True,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=0,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[Clock()])
        stamps[0] = time.perf_counter()
        trainer.train()
    tokens = sum(len(tok(d["prompt"] + d[s])["input_ids"]) for d in data for s in ("chosen", "rejected")) / (
        2 * len(data)
    )
    return _result("trl", stamps[-(steps + WARMUP + 1) :], prompts_per_step * 6, prompts_per_step * 12, tokens)


def _result(side: str, stamps: list[float], pairs: int, seqs: int, tokens: float) -> dict:
    step_s = [b - a for a, b in zip(stamps, stamps[1:])][WARMUP:]  # warm-up steps excluded
    step_s.sort()
    return {
        "side": side,
        "pairs_per_step": pairs,
        "sequences_per_step": seqs,
        "mean_tokens_per_sequence": tokens,
        "step_s": step_s,
        "median_step_s": step_s[len(step_s) // 2],
        "min_step_s": step_s[0],
        "pairs_per_s_median": pairs / step_s[len(step_s) // 2],
        "pairs_per_s_best": pairs / step_s[0],
        "peak_rss_mb": peak_rss_mb(),
    }


if __name__ == "__main__":
    import torch

    torch.manual_seed(0)
    side, model_dir, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = (run_ours if side == "ours" else run_trl)(model_dir, n, steps)
    print("BENCH " + json.dumps(out))
