"""The `sample` stage's work: K completions per prompt from the SFT model, gold scores, labeled pairs."""

from __future__ import annotations

import statistics
from pathlib import Path

from tasks.label.gold import load_scorer, scored_text
from tasks.label.labelers import make_labeler, prompt_id
from tasks.lm.generation import sample
from tasks.lm.models import load_lm
from tasks.runtime.context import RunContext
from tasks.runtime.device import seed_everything
from tasks.runtime.files import write_jsonl


def sample_groups(cfg, prompts: list, sft_dir: Path, ctx: RunContext) -> list[dict]:
    """[{prompt_id, prompt, completions: [{text, ended, gold, n_tokens}]}] for the first cfg.max_prompts prompts
    (gold: where cfg.gold_scorer is set)."""
    seed_everything(cfg.seed)
    scorer = load_scorer(cfg.gold_scorer) if cfg.gold_scorer else None
    prompts = prompts[: cfg.max_prompts]
    model, tok = load_lm(sft_dir, ctx.device)
    samples = sample(
        model,
        tok,
        prompts,
        cfg.k,
        cfg.generation,
        cfg.seed,
        ctx,
        cfg.max_prompt_len,
    )
    groups = [{"prompt_id": prompt_id(p), "prompt": p, "completions": []} for p in prompts]
    for s in samples:
        group = groups[s["prompt_index"]]
        completion = {"text": s["text"], "ended": s["ended"], "n_tokens": len(s["response"])}
        if scorer is not None:
            completion["gold"] = float(scorer(scored_text(group["prompt"], s["text"])))
        group["completions"].append(completion)
    return groups


def summarize(groups: list[dict], pairs: list[dict]) -> dict:
    m = {"n_prompts": len({p["prompt_id"] for p in pairs}), "n_pairs": len(pairs)}
    comps = [c for g in groups for c in g["completions"]]
    if comps:
        m.update(
            n_completions=len(comps),
            eos_rate=sum(c["ended"] for c in comps) / len(comps),
            mean_tokens=statistics.fmean(c["n_tokens"] for c in comps),
        )
    if golds := [c["gold"] for c in comps if "gold" in c]:
        m.update(gold_mean=statistics.fmean(golds), gold_std=statistics.pstdev(golds))
    decided = [p for p in pairs if p.get("gold_chosen") is not None and p["gold_chosen"] != p["gold_rejected"]]
    if decided:  # how often the (noisy) annotators agree with the noiseless gold order
        m["label_gold_agreement"] = sum(p["gold_chosen"] > p["gold_rejected"] for p in decided) / len(decided)
        m["gold_tie_share"] = 1 - len(decided) / len(pairs)
    return m


def run_sample(cfg, prompts: list, sft_dir: Path, out_dir: Path, ctx: RunContext, base_dir: Path) -> dict:
    """Write out_dir/completions.jsonl and out_dir/pairs.jsonl; return summary metrics. Relative paths of a
    preference dataset are read from base_dir."""
    out_dir, labeler = Path(out_dir), make_labeler(cfg, base_dir)
    groups = sample_groups(cfg, prompts, sft_dir, ctx) if labeler.needs_samples else []
    pairs = labeler.label(groups)
    out_dir.mkdir(parents=True, exist_ok=True)
    completions = [dict(c, prompt_id=g["prompt_id"], prompt=g["prompt"]) for g in groups for c in g["completions"]]
    write_jsonl(out_dir / "completions.jsonl", completions)
    write_jsonl(out_dir / "pairs.jsonl", pairs)
    return summarize(groups, pairs)
