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
from tasks.eval.agreement import judge_agreement
from tasks.eval.judges import both_orders, load_judges, win_metrics
from tasks.eval.length_control import pair_differences, pair_outcomes
from tasks.eval.rating import rating
from tasks.eval.scoring import gold_scores, rm_scores
from tasks.label.gold import load_scorer
from tasks.lm.batching import collate, encode_example
from tasks.lm.generation import batched_logprobs, sample
from tasks.lm.models import load_lm, load_scalar_model
from tasks.runtime.context import RunContext
from tasks.train.loop import heldout_nll
from tasks.train.reward_model import load_reward_norm


def sequence_kls(logp: list[torch.Tensor], ref_logp: list[torch.Tensor]) -> list[float]:
    """Per sample Σ_t (log π(y_t) − log π_ref(y_t)): its mean over π's samples is a Monte-Carlo KL(π‖π_ref)."""
    return [(a - b).sum().item() for a, b in zip(logp, ref_logp)]


def perplexity(model, tok, texts: list[str], max_length: int, batch_size: int, ctx: RunContext) -> float:
    examples = [encode_example("", t, tok, max_length) for t in texts]
    return math.exp(
        heldout_nll(model, examples, partial(collate, pad_id=tok.pad_token_id), batch_size, ctx, desc="perplexity")
    )


REWARDS = {"gold": "gold_reward", "rm": "rm_score", "heldout_rm": "heldout_rm_score"}  # a judge's mean score's name


def reward_name(judge: str) -> str:
    return REWARDS.get(judge, f"score_{judge}")


@dataclass(frozen=True)
class Scoring:
    """How every policy's samples are drawn and scored: where, the prompt budget, the pointwise judges."""

    ctx: RunContext
    max_prompt_len: int
    scorers: dict  # {judge: f(text) -> float}: the gold scorer, pointwise function judges
    rms: dict  # {judge: (reward model, its normalization)}: rm, heldout_rm (those that trained)


@dataclass(frozen=True)
class Judging:
    """Who judges: the resolved eval.judges, the gate's judge, and where the judges come from."""

    judges: list[str]  # eval.judges, auto resolved (tasks/config.py: judges)
    gate: str  # the judge whose win rate is the headline `win_rate` and the gate's
    gold_scorer: str | None  # sample.gold_scorer ('module:function'), when gold is a judge
    rm_dirs: dict  # {rm judge: model dir}
    heldout_pairs: list[dict]  # the comparisons no policy trained on (agreement of every judge with the labels)
    rm_heldout_frac: float = 0.2  # heldout_rm's own validation prompts among them (rm.heldout_frac)
    rm_lengths: tuple[int, int] = (64, 64)  # prompt and response tokens an RM reads (rm.max_prompt_len, the rest)
    judge_dir: Path | None = None  # the lm judge's model (models/judge: the judge stage's copy of eval.judge_model)


def policy_samples(model, tok, prompts, gen_cfg, k: int, seed: int, scoring: Scoring) -> dict:
    """k seeded samples of each prompt, with each pointwise judge's score as (n_prompts, k) arrays."""
    s = sample(model, tok, prompts, k, gen_cfg, seed, scoring.ctx, scoring.max_prompt_len)
    index, n = [x["prompt_index"] for x in s], len(prompts)
    out = {"samples": s, "length": stats.by_prompt([len(x["response"]) for x in s], index, n)}  # tokens
    for name, fn in scoring.scorers.items():
        out[name] = stats.by_prompt(gold_scores(fn, prompts, s), index, n)
    for name, (rm, norm) in scoring.rms.items():
        out[name] = stats.by_prompt(rm_scores(rm, norm, s, tok.pad_token_id, scoring.ctx), index, n)
    return out


def policy_kl(policy, sft, tok, pol: dict, n_prompts: int, ctx: RunContext, batch_size: int) -> np.ndarray:
    """(n_prompts, k) sequence KL of each of the policy's samples; 0 for the SFT model itself."""
    if policy is sft:
        return np.zeros(pol["length"].shape)
    q, r = [s["query"] for s in pol["samples"]], [s["response"] for s in pol["samples"]]
    lp = batched_logprobs(policy, q, r, tok.pad_token_id, 1.0, batch_size, ctx)
    ref = batched_logprobs(sft, q, r, tok.pad_token_id, 1.0, batch_size, ctx)
    return stats.by_prompt(sequence_kls(lp, ref), [s["prompt_index"] for s in pol["samples"]], n_prompts)


def outcomes_vs_sft(pol: dict, base: dict, pairwise: dict, prompts: list, same: bool, k: int) -> tuple[dict, dict]:
    """Every judge's (n_prompts, k·k) outcomes of the policy's samples against SFT's (1 win, ½ tie, 0 loss): the
    pointwise ones from the scores, the pairwise ones asked in both orders (their position consistency)."""
    out = {j: pair_outcomes(pol[j], base[j]) for j in pol if j not in ("samples", "length")}
    extra = {}
    for name, judge in pairwise.items():
        if same:  # the policy is SFT itself: every pair a tie, nothing to ask
            out[name] = np.full((len(prompts), k * k), 0.5)
            continue
        judged = both_orders(judge, prompts, pol["samples"], base["samples"], k)
        out[name], extra[f"position_consistency_{name}"] = judged["outcomes"], judged["position_consistency"]
    return out, extra


def policy_metrics(pol: dict, base: dict, outcomes: dict, kl: np.ndarray, gate: str, indices, level: float) -> dict:
    """One policy's numbers, each with its paired-bootstrap interval: every judge's win rate (LC, W/D/L), the
    gate judge's as the headline `win_rate` (and n_wins, ...), each pointwise judge's mean score, the proxy gap
    (rm's win rate minus each other judge's: over-optimization in view), KL, the length difference to SFT."""
    diff = pair_differences(pol["length"], base["length"])
    m = stats.flat("kl", stats.interval(kl.mean(axis=1), indices, level))
    m |= stats.flat("length_diff", stats.interval(diff.mean(axis=1), indices, level))
    for judge, o in outcomes.items():
        m |= win_metrics(judge, o, diff, indices, level)
        if judge in pol:
            m |= stats.flat(reward_name(judge), stats.interval(pol[judge].mean(axis=1), indices, level))
        if "rm" in outcomes and judge != "rm":
            gap = outcomes["rm"].mean(axis=1) - o.mean(axis=1)
            m |= stats.flat(f"proxy_gap_{judge}", stats.interval(gap, indices, level))
    headline = {f"{c}_{gate}": c for c in ("n_wins", "n_draws", "n_losses")}
    for suffix in ("", "_se", "_ci_low", "_ci_high"):
        headline |= {f"{w}_{gate}{suffix}": f"{w}{suffix}" for w in ("win_rate", "lc_win_rate")}
    m |= {new: m[old] for old, new in headline.items() if old in m}
    samples = pol["samples"]
    return m | {
        "n_prompts": len(kl),
        "samples_per_prompt": kl.shape[1],
        "response_length": sum(len(x["response"]) for x in samples) / len(samples),
        "no_eos_rate": sum(not x["ended"] for x in samples) / len(samples),
    }


def head_to_head(scores: dict[str, np.ndarray], indices: np.ndarray, level: float, judge: str = "gold") -> dict:
    """Every two policies ({name: (n_prompts, k) scores of a pointwise judge}, SFT excluded), paired on the same
    prompts: the first's win rate over the second and the difference of their mean score, each with its
    interval; `significant` when the difference's interval excludes 0."""
    out = {}
    for a, b in combinations([n for n in scores if n != "sft"], 2):
        win = stats.interval(stats.pairwise_wins(scores[a], scores[b]), indices, level)
        diff = stats.interval(scores[a].mean(axis=1) - scores[b].mean(axis=1), indices, level)
        out[f"{a}_vs_{b}"] = (
            stats.flat(f"win_rate_{judge}", win)
            | stats.flat(f"{reward_name(judge)}_diff", diff)
            | {"significant": int(diff["lo"] > 0 or diff["hi"] < 0)}
        )
    return out


def load_scoring(judging: Judging, cfg, ctx: RunContext) -> tuple[Scoring, dict]:
    """The pointwise judges (gold, rms that trained, function scorers) and the pairwise ones, loaded."""
    pairwise, scorers = load_judges(judging.judges, judging.judge_dir, ctx, cfg.batch_size)
    if "gold" in judging.judges:
        scorers = {"gold": load_scorer(judging.gold_scorer)} | scorers
    rms = {
        name: (load_scalar_model(path, ctx.device)[0].eval(), load_reward_norm(path))
        for name, path in judging.rm_dirs.items()
        if name in judging.judges and (Path(path) / "config.json").exists()  # 'skipped' when nothing needed it
    }
    return Scoring(ctx, cfg.max_prompt_len, scorers, rms), pairwise


def sample_rows(prompts: list, pol: dict, base: dict) -> list[dict]:
    """Every policy sample beside SFT's of the same prompt and pair position, with each pointwise judge's scores."""
    judges = [j for j in pol if j not in ("samples", "length")]
    return [
        {
            "prompt": prompts[a["prompt_index"]],
            "sft_response": a["text"],
            "policy_response": b["text"],
            **{f"{j}_sft": float(base[j].flat[i]) for j in judges},
            **{f"{j}_policy": float(pol[j].flat[i]) for j in judges},
        }
        for i, (a, b) in enumerate(zip(base["samples"], pol["samples"]))
    ]


def head_judge(judging: Judging, scoring: Scoring) -> str | None:
    """The pointwise judge of the head-to-head and greedy numbers: the gate's when pointwise, else gold, the
    held-out RM, the RM, a function scorer; None without any."""
    ranked = [judging.gate, "gold", "heldout_rm", "rm", *scoring.scorers]
    return next((j for j in ranked if j in scoring.scorers or j in scoring.rms), None)


def sft_reference(sft_dir, cfg, judging: Judging, prompts: list, texts: list[str], ctx: RunContext) -> dict:
    """What every policy is compared with, computed once per SFT model and judges (the `eval_sft` stage caches it
    for every experiment that shares them): SFT's samples with each pointwise judge's scores (its greedy ones too
    with cfg.greedy), its perplexity, and every judge's agreement with the held-out labels."""
    prompts, texts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts, texts[: cfg.ppl_texts]
    sft, tok = load_lm(sft_dir, ctx.device)
    scoring, pairwise = load_scoring(judging, cfg, ctx)
    ref = {"sampled": policy_samples(sft, tok, prompts, cfg.generation, cfg.samples_per_prompt, cfg.seed, scoring)}
    if cfg.greedy and head_judge(judging, scoring):
        greedy = cfg.generation.model_copy(update={"temperature": 0.0})
        ref["greedy"] = policy_samples(sft, tok, prompts, greedy, 1, cfg.seed, scoring)
    ref["perplexity"] = perplexity(sft, tok, texts, cfg.ppl_max_length, cfg.batch_size, ctx)
    ref["judges"] = judge_agreement(judging, scoring, pairwise, tok, cfg) if judging.heldout_pairs else {}
    return ref


def reference_to_json(ref: dict) -> dict:
    """sft_reference's result as JSON (score arrays as nested lists: floats round-trip exactly)."""
    draws = {
        k: {j: v.tolist() if isinstance(v, np.ndarray) else v for j, v in ref[k].items()} for k in DRAWS & ref.keys()
    }
    return ref | draws


def reference_from_json(data: dict) -> dict:
    draws = {k: {j: v if j == "samples" else np.array(v) for j, v in data[k].items()} for k in DRAWS & data.keys()}
    return data | draws


DRAWS = {"sampled", "greedy"}


def evaluate_policies(
    policy_dirs: dict,
    sft_dir,
    cfg,
    judging: Judging,
    prompts: list,
    texts: list[str],
    ctx: RunContext,
    reference: dict | None = None,
) -> dict:
    """Every policy in policy_dirs ({name: dir}) vs the SFT model on held-out prompts (all, or the first
    cfg.max_prompts) and held-out texts for the perplexity (the first cfg.ppl_texts).

    cfg: the `eval` section. reference: SFT's side (sft_reference's, cached by the eval_sft stage; None:
    computed here). Each policy samples the same prompts with the same seed. Returns {"policies": {name:
    {"metrics", "samples": rows for a person to read}}, "head_to_head": {a_vs_b: metrics}, "judges": each judge's
    agreement with the held-out labels (and gold), "per_prompt": the head-to-head judge's (n_prompts, k) scores};
    "sft" is among the policies (win rates exactly ½, KL 0); with a pointwise judge every policy's metrics carry its
    Elo rating by the head-to-head judge (rating.py).
    """
    reference = reference or sft_reference(sft_dir, cfg, judging, prompts, texts, ctx)
    prompts, texts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts, texts[: cfg.ppl_texts]
    n, k = len(prompts), cfg.samples_per_prompt
    indices = stats.bootstrap_indices(n, cfg.bootstrap_resamples, cfg.seed)
    sft, tok = load_lm(sft_dir, ctx.device)
    scoring, pairwise = load_scoring(judging, cfg, ctx)
    head = head_judge(judging, scoring)
    greedy = cfg.generation.model_copy(update={"temperature": 0.0})
    base, base_greedy = reference["sampled"], reference.get("greedy")
    out, scores = {}, {}
    for name, path in {"sft": None, **policy_dirs}.items():
        policy = sft if path is None else load_lm(path, ctx.device)[0]
        pol = base if path is None else policy_samples(policy, tok, prompts, cfg.generation, k, cfg.seed, scoring)
        kl = policy_kl(policy, sft, tok, pol, n, ctx, cfg.batch_size)
        outcomes, extra = outcomes_vs_sft(pol, base, pairwise, prompts, path is None, k)
        m = policy_metrics(pol, base, outcomes, kl, judging.gate, indices, cfg.ci_level) | extra
        m["perplexity"] = (
            reference["perplexity"]
            if path is None
            else perplexity(policy, tok, texts, cfg.ppl_max_length, cfg.batch_size, ctx)
        )
        if base_greedy is not None:  # greedy decoding: the policy's mode, judged the same way
            g = base_greedy if path is None else policy_samples(policy, tok, prompts, greedy, 1, cfg.seed, scoring)
            m |= {
                f"greedy_{reward_name(head)}": float(g[head].mean()),
                f"greedy_win_rate_{head}": float(stats.pairwise_wins(g[head], base_greedy[head]).mean()),
            }
        out[name] = {"metrics": m, "samples": sample_rows(prompts, pol, base)}
        if head:
            scores[name] = pol[head]
    h2h = head_to_head(scores, indices, cfg.ci_level, head) if head else {}
    if head:  # every policy and SFT on one scale: Bradley–Terry fitted to all their pairings, SFT at 1000
        for name, r in rating(scores, indices, cfg.ci_level).items():
            out[name]["metrics"] |= r
    per_prompt = {"judge": head, "scores": {name: s.tolist() for name, s in scores.items()}}  # for later rounds
    return {"policies": out, "head_to_head": h2h, "judges": reference["judges"], "per_prompt": per_prompt}
