"""Held-out evaluation of every policy against the SFT model, with the uncertainty of each number, and the
champion gate that decides which policy version gets the registry alias.

Every policy samples `samples_per_prompt` responses to each held-out prompt with the same seed as the SFT
model; per prompt, its samples are compared with SFT's (all pairs) and averaged, and the prompts are
resampled together for every policy (tasks/eval/stats.py): win rates, gold reward, RM score and KL come with a
standard error and an interval, and every two policies get a paired head-to-head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from tasks.eval import stats
from tasks.eval.judges import judge_metrics, load_judges
from tasks.eval.length_control import lc_interval, pair_differences, pair_outcomes
from tasks.label.gold import load_scorer, scored_text
from tasks.lm.batching import collate, encode_example
from tasks.lm.generation import batched_logprobs, pack, sample
from tasks.lm.models import load_lm, load_scalar_model
from tasks.runtime.context import RunContext, to_device
from tasks.train.loop import heldout_nll
from tasks.train.reward_model import load_reward_norm, normalized, sequence_rewards

INTERVAL_METRICS = ("win_rate_gold", "win_rate_rm", "gold_reward", "rm_score", "kl")


def sequence_kls(logp: list[torch.Tensor], ref_logp: list[torch.Tensor]) -> list[float]:
    """Per sample Σ_t (log π(y_t) − log π_ref(y_t)): its mean over π's samples is a Monte-Carlo KL(π‖π_ref)."""
    return [(a - b).sum().item() for a, b in zip(logp, ref_logp)]


@torch.no_grad()
def rm_scores(rm, norm: dict, samples: list[dict], pad_id: int, ctx: RunContext, batch_size: int = 16) -> list[float]:
    out = []
    for i in range(0, len(samples), batch_size):
        s = samples[i : i + batch_size]
        packed = to_device(pack([x["query"] for x in s], [x["response"] for x in s], pad_id), ctx.device)
        with ctx.autocast():
            r = sequence_rewards(rm, packed, norm.get("pooling", "last")).float()
            out += normalized(r, norm).tolist()
    return out


def gold_scores(scorer, prompts: list, samples: list[dict]) -> list[float]:
    return [float(scorer(scored_text(prompts[s["prompt_index"]], s["text"]))) for s in samples]


def perplexity(model, tok, texts: list[str], max_length: int, batch_size: int, ctx: RunContext) -> float:
    examples = [encode_example("", t, tok, max_length) for t in texts]
    return math.exp(
        heldout_nll(model, examples, partial(collate, pad_id=tok.pad_token_id), batch_size, ctx, desc="perplexity")
    )


@dataclass(frozen=True)
class Scoring:
    """How every policy's samples are drawn and judged: where, the prompt budget, the gold scorer and the RM."""

    ctx: RunContext
    max_prompt_len: int
    scorer: object  # str -> float
    rm: object | None  # the reward model (None when the rm stage was skipped)
    norm: dict  # its normalization (gain, bias, pooling)


def policy_samples(model, tok, prompts, gen_cfg, k: int, seed: int, scoring: Scoring) -> dict:
    """k seeded samples of each prompt, with their gold and RM scores (no RM: none) as (n_prompts, k) arrays."""
    s = sample(model, tok, prompts, k, gen_cfg, seed, scoring.ctx, scoring.max_prompt_len)
    index = [x["prompt_index"] for x in s]
    out = {"samples": s, "gold": stats.by_prompt(gold_scores(scoring.scorer, prompts, s), index, len(prompts))}
    out["length"] = stats.by_prompt([len(x["response"]) for x in s], index, len(prompts))  # tokens
    if scoring.rm is not None:
        rm = rm_scores(scoring.rm, scoring.norm, s, tok.pad_token_id, scoring.ctx)
        out["rm"] = stats.by_prompt(rm, index, len(prompts))
    return out


def policy_kl(policy, sft, tok, pol: dict, n_prompts: int, ctx: RunContext, batch_size: int) -> np.ndarray:
    """(n_prompts, k) sequence KL of each of the policy's samples; 0 for the SFT model itself."""
    if policy is sft:
        return np.zeros(pol["gold"].shape)
    q, r = [s["query"] for s in pol["samples"]], [s["response"] for s in pol["samples"]]
    lp = batched_logprobs(policy, q, r, tok.pad_token_id, 1.0, batch_size, ctx)
    ref = batched_logprobs(sft, q, r, tok.pad_token_id, 1.0, batch_size, ctx)
    return stats.by_prompt(sequence_kls(lp, ref), [s["prompt_index"] for s in pol["samples"]], n_prompts)


def per_prompt(pol: dict, base: dict, kl: np.ndarray) -> dict:
    """The per-prompt statistics (n_prompts,) whose means are the reported numbers (RM ones when there is an RM)."""
    out = {
        "win_rate_gold": stats.pairwise_wins(pol["gold"], base["gold"]),
        "gold_reward": pol["gold"].mean(axis=1),
        "kl": kl.mean(axis=1),
    }
    if "rm" in pol:
        out |= {"win_rate_rm": stats.pairwise_wins(pol["rm"], base["rm"]), "rm_score": pol["rm"].mean(axis=1)}
    return out


def summarize(values: dict, samples: list[dict], indices: np.ndarray, level: float) -> dict:
    """Metrics of one policy: each per-prompt statistic's mean, SE and interval, the win/draw/loss counts."""
    m = {}
    for name in (n for n in INTERVAL_METRICS if n in values):
        m |= stats.flat(name, stats.interval(values[name], indices, level))
    n_prompts, k = len(values["kl"]), len(samples) // len(values["kl"])
    return m | {
        **stats.outcome_counts(values["win_rate_gold"]),
        "n_prompts": n_prompts,
        "samples_per_prompt": k,
        "response_length": sum(len(x["response"]) for x in samples) / len(samples),
        "no_eos_rate": sum(not x["ended"] for x in samples) / len(samples),
    }


def length_controlled(pol: dict, base: dict, indices: np.ndarray, level: float) -> dict:
    """Each judge's length-controlled win rate vs SFT (tasks/eval/length_control.py) and the response-length
    difference to SFT in tokens, each with its paired-bootstrap interval."""
    diff = pair_differences(pol["length"], base["length"])
    m = stats.flat("length_diff", stats.interval(diff.mean(axis=1), indices, level))
    for judge in ("gold", "rm"):
        if judge in pol:
            lc = lc_interval(pair_outcomes(pol[judge], base[judge]), diff, indices, level)
            m |= stats.flat(f"lc_win_rate_{judge}", lc)
    return m


def head_to_head(gold: dict[str, np.ndarray], indices: np.ndarray, level: float) -> dict:
    """Every two policies ({name: (n_prompts, k) gold scores}, SFT excluded), paired on the same prompts:
    the gold win rate of the first over the second and the difference of their mean gold reward, each with
    its interval; `significant` when the difference's interval excludes 0."""
    out = {}
    for a, b in combinations([n for n in gold if n != "sft"], 2):
        win = stats.interval(stats.pairwise_wins(gold[a], gold[b]), indices, level)
        diff = stats.interval(gold[a].mean(axis=1) - gold[b].mean(axis=1), indices, level)
        out[f"{a}_vs_{b}"] = (
            stats.flat("win_rate_gold", win)
            | stats.flat("gold_reward_diff", diff)
            | {"significant": int(diff["lo"] > 0 or diff["hi"] < 0)}
        )
    return out


def choose_champion(
    results: dict[str, dict], max_kl: float, min_win_rate: float, incumbent: dict | None = None
) -> tuple[str | None, str]:
    """The champion gate. Candidates: policies with mean KL ≤ max_kl whose win-rate interval vs SFT has its
    lower end ≥ min_win_rate; the best is the highest win rate (ties: lower KL). It replaces the incumbent
    (its recorded metrics: version, policy, win_rate_gold_ci_low/high) only when their intervals do not
    overlap; otherwise the incumbent stays. Returns (name or None, why)."""

    def iv(m):
        return f"{m['win_rate_gold']:.1%} [{m['win_rate_gold_ci_low']:.1%}, {m['win_rate_gold_ci_high']:.1%}]"

    policies = {n: m for n, m in results.items() if n != "sft"}
    ok = {n: m for n, m in policies.items() if m["kl"] <= max_kl}
    if not ok:
        return None, f"no policy has KL <= {max_kl} (" + ", ".join(
            f"{n}: {m['kl']:.2f}" for n, m in policies.items()
        ) + ")"
    cleared = {n: m for n, m in ok.items() if m["win_rate_gold_ci_low"] >= min_win_rate}
    if not cleared:
        top = max(ok, key=lambda n: ok[n]["win_rate_gold_ci_low"])
        return None, (
            f"no policy's win-rate interval clears {min_win_rate:.1%}: the best, {top}, wins {iv(ok[top])} vs SFT"
        )
    best = max(cleared, key=lambda n: (cleared[n]["win_rate_gold"], -cleared[n]["kl"]))
    m = cleared[best]
    why = f"{best} wins {iv(m)} vs SFT (lower end >= {min_win_rate:.1%}) at KL {m['kl']:.2f} <= {max_kl}"
    band = (m["win_rate_gold_ci_low"], m["win_rate_gold_ci_high"])
    ties = [
        n
        for n, o in cleared.items()
        if n != best and stats.overlap(band, (o["win_rate_gold_ci_low"], o["win_rate_gold_ci_high"]))
    ]
    if ties:
        why += f"; not significantly better than {', '.join(f'{n} {iv(cleared[n])}' for n in ties)}"
    if incumbent and incumbent.get("win_rate_gold_ci_low") is not None and incumbent.get("version") != m.get("version"):
        held = (incumbent["win_rate_gold_ci_low"], incumbent["win_rate_gold_ci_high"])
        if stats.overlap(band, held):
            return None, (
                f"{why}; but its interval overlaps the incumbent's ({incumbent.get('policy', '?')} version "
                f"{incumbent['version']}: {iv(incumbent)}), so the incumbent stays"
            )
        who = f"{incumbent.get('policy', '?')} version {incumbent['version']}"
        why += f"; the incumbent ({who}: {iv(incumbent)}) is beaten"
    return best, why


def incumbent_of(registry, name: str, alias: str) -> dict | None:
    """The version holding `alias` with the eval metrics recorded on it when it was promoted (tags eval_*)."""
    held = registry.alias_tags(name, alias)
    if held is None:
        return None
    version, tags = held
    m = {k.removeprefix("eval_"): float(v) for k, v in tags.items() if k.startswith("eval_")}
    return {"version": version, "policy": tags.get("stage", "?"), **m} if "win_rate_gold" in m else {"version": version}


def champion_gate(metrics: dict[str, dict], run_infos: dict[str, dict], cfg, policy_model: str, registry) -> dict:
    """Apply the gate (cfg: eval.champion) to the eval metrics {policy: metrics}: set cfg.alias on the winner's
    registered version of `policy_model` (its run_infos entry names the version), or leave the alias where it
    is and say so. registry: promote(name, version, alias, tags) and alias_tags(name, alias) -> (version, tags)
    or None. Returns the decision written to metrics/champion.json."""
    incumbent = incumbent_of(registry, policy_model, cfg.alias)
    versions = {n: {**m, "version": str(run_infos.get(n, {}).get("version"))} for n, m in metrics.items()}
    best, why = choose_champion(versions, cfg.max_kl, cfg.min_win_rate, incumbent)
    decision = {"promoted": 0, "reason": why}
    info = run_infos.get(best, {}) if best else {}
    if best and not info.get("version"):
        decision["reason"] = f"{why}; but {best} has no registered version (tracking.register_models is off)"
    elif best:
        name, version = info["registered_model"], str(info["version"])
        tags = {f"eval_{k}": f"{v:.6g}" for k, v in metrics[best].items()} | {"champion_reason": why}
        registry.promote(name, version, cfg.alias, tags)
        decision.update(promoted=1, policy=best, model=f"models:/{name}@{cfg.alias}", version=int(version))
    if not decision["promoted"]:
        decision["reason"] += (
            f"; {cfg.alias} stays on version {incumbent['version']}"
            if incumbent
            else f"; no version has the {cfg.alias} alias"
        )
    return decision


def evaluate_policies(
    policy_dirs: dict, sft_dir, rm_dir, cfg, scorer_path: str, prompts: list, texts: list[str], ctx: RunContext
) -> dict:
    """Every policy in policy_dirs ({name: dir}) vs the SFT model on held-out prompts (all, or the first
    cfg.max_prompts) and held-out texts for the perplexity (the first cfg.ppl_texts).

    cfg: the `eval` section. The SFT model samples once; each policy samples the same prompts with the same
    seed. Returns {"policies": {name: {"metrics", "samples": rows for a person to read}}, "head_to_head":
    {a_vs_b: metrics}}; "sft" is among the policies (its win rates are exactly ½ and its KL 0).
    """
    scorer = load_scorer(scorer_path)
    prompts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts
    texts = texts[: cfg.ppl_texts]
    n, k = len(prompts), cfg.samples_per_prompt
    indices = stats.bootstrap_indices(n, cfg.bootstrap_resamples, cfg.seed)
    sft, tok = load_lm(sft_dir, ctx.device)
    rm, norm = None, {}
    if "rm" in cfg.judges and (Path(rm_dir) / "config.json").exists():  # 'skipped' when no stage optimizes it
        rm, norm = load_scalar_model(rm_dir, ctx.device)[0].eval(), load_reward_norm(rm_dir)
    scoring = Scoring(ctx, cfg.max_prompt_len, scorer, rm, norm)
    judges = load_judges(cfg.judges, cfg.judge_model, ctx, cfg.batch_size)
    greedy = cfg.generation.model_copy(update={"temperature": 0.0})
    base = policy_samples(sft, tok, prompts, cfg.generation, k, cfg.seed, scoring)
    base_greedy = policy_samples(sft, tok, prompts, greedy, 1, cfg.seed, scoring) if cfg.greedy else None
    out, gold = {}, {}
    for name, path in {"sft": None, **policy_dirs}.items():
        policy = sft if path is None else load_lm(path, ctx.device)[0]
        pol = base if path is None else policy_samples(policy, tok, prompts, cfg.generation, k, cfg.seed, scoring)
        kl = policy_kl(policy, sft, tok, pol, n, ctx, cfg.batch_size)
        m = summarize(per_prompt(pol, base, kl), pol["samples"], indices, cfg.ci_level)
        m |= length_controlled(pol, base, indices, cfg.ci_level)
        for judge_name, judge in judges.items():
            m |= judge_metrics(judge_name, judge, prompts, pol, base, path is None, cfg)
        m["perplexity"] = perplexity(policy, tok, texts, cfg.ppl_max_length, cfg.batch_size, ctx)
        if cfg.greedy:  # greedy decoding: the policy's mode, judged the same way
            g = base_greedy if path is None else policy_samples(policy, tok, prompts, greedy, 1, cfg.seed, scoring)
            m |= {
                "greedy_gold_reward": float(g["gold"].mean()),
                "greedy_win_rate_gold": float(stats.pairwise_wins(g["gold"], base_greedy["gold"]).mean()),
            }
        rows = [
            {
                "prompt": prompts[a["prompt_index"]],
                "sft_response": a["text"],
                "policy_response": b["text"],
                "gold_sft": float(base["gold"].flat[i]),
                "gold_policy": float(pol["gold"].flat[i]),
                **(
                    {"rm_sft": float(base["rm"].flat[i]), "rm_policy": float(pol["rm"].flat[i])}
                    if rm is not None
                    else {}
                ),
            }
            for i, (a, b) in enumerate(zip(base["samples"], pol["samples"]))
        ]
        out[name], gold[name] = {"metrics": m, "samples": rows}, pol["gold"]
    return {"policies": out, "head_to_head": head_to_head(gold, indices, cfg.ci_level)}
