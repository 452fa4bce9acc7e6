"""Held-out evaluation of a policy against the SFT model (gold reward, win rate, RM score, KL, perplexity),
and the champion gate that decides which policy version gets the registry alias.

The eval stage runs it for every policy that trained; every number is computed on the policy's own seeded
samples of the held-out evaluation prompts, against the SFT model's samples of the same prompts.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from tasks.batching import collate, encode_example
from tasks.context import autocast, to_device
from tasks.generation import batched_logprobs, pack, sample
from tasks.gold import load_scorer, scored_text
from tasks.models import load_lm, load_scalar_model
from tasks.reward import load_reward_norm, sequence_rewards
from tasks.train import heldout_nll


def win_rate(policy_scores: list[float], baseline_scores: list[float]) -> float:
    """Share of prompts where the policy's response beats the baseline's; ties count ½."""
    assert len(policy_scores) == len(baseline_scores) and policy_scores
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(policy_scores, baseline_scores)) / len(
        policy_scores
    )


def sequence_kl(logp: list[torch.Tensor], ref_logp: list[torch.Tensor]) -> float:
    """Mean over samples of Σ_t (log π(y_t) − log π_ref(y_t)): a Monte-Carlo KL(π‖π_ref) on π's samples (nats)."""
    return sum((a - b).sum().item() for a, b in zip(logp, ref_logp)) / len(logp)


@torch.no_grad()
def rm_scores(
    rm, norm: dict, samples: list[dict], pad_id: int, device: str, dtype, batch_size: int = 16
) -> list[float]:
    out = []
    for i in range(0, len(samples), batch_size):
        s = samples[i : i + batch_size]
        packed = to_device(pack([x["query"] for x in s], [x["response"] for x in s], pad_id), device)
        with autocast(device, dtype):
            r = sequence_rewards(rm, packed, norm.get("pooling", "last")).float()
            out += (r * norm["gain"] + norm["bias"]).tolist()
    return out


def gold_scores(scorer, prompts: list, samples: list[dict]) -> list[float]:
    return [float(scorer(scored_text(prompts[s["prompt_index"]], s["text"]))) for s in samples]


def perplexity(model, tok, texts: list[str], max_length: int, batch_size: int, device: str, dtype) -> float:
    examples = [encode_example("", t, tok, max_length) for t in texts]
    return math.exp(
        heldout_nll(
            model, examples, partial(collate, pad_id=tok.pad_token_id), batch_size, device, dtype, desc="perplexity"
        )
    )


def policy_samples(model, tok, prompts, gen_cfg, seed, device, dtype, max_prompt_len, scorer, rm, norm) -> dict:
    """Seeded samples of `prompts` with their gold and RM scores."""
    s = sample(model, tok, prompts, 1, gen_cfg, seed, device, dtype, max_prompt_len, desc="eval sampling")
    return {
        "samples": s,
        "gold": gold_scores(scorer, prompts, s),
        "rm": rm_scores(rm, norm, s, tok.pad_token_id, device, dtype),
    }


def compare(policy, sft, tok, pol: dict, base: dict, device, dtype, batch_size: int = 16) -> dict:
    """Metrics of the policy's samples `pol` against the SFT model's samples `base` on the same prompts."""
    q = [s["query"] for s in pol["samples"]]
    r = [s["response"] for s in pol["samples"]]
    if policy is sft:  # the reference point itself: KL is 0 by definition, no forward passes needed
        kl = 0.0
    else:
        lp = batched_logprobs(policy, q, r, tok.pad_token_id, 1.0, batch_size, device, dtype)
        kl = sequence_kl(lp, batched_logprobs(sft, q, r, tok.pad_token_id, 1.0, batch_size, device, dtype))
    n = len(pol["samples"])
    return {
        "gold_reward": sum(pol["gold"]) / n,
        "rm_score": sum(pol["rm"]) / n,
        "win_rate_gold": win_rate(pol["gold"], base["gold"]),
        "win_rate_rm": win_rate(pol["rm"], base["rm"]),
        "kl": kl,
        "response_length": sum(len(x) for x in r) / n,
        "no_eos_rate": sum(not s["ended"] for s in pol["samples"]) / n,
    }


def choose_champion(results: dict[str, dict], max_kl: float, min_win_rate: float) -> tuple[str | None, str]:
    """The champion gate: the policy with the highest gold win rate vs SFT among those with KL ≤ max_kl
    (ties: lower KL), promoted only if that win rate is ≥ min_win_rate. Returns (name or None, why)."""
    ok = {n: m for n, m in results.items() if n != "sft" and m["kl"] <= max_kl}
    if not ok:
        return None, f"no policy has KL <= {max_kl} (" + ", ".join(
            f"{n}: {m['kl']:.2f}" for n, m in results.items() if n != "sft"
        ) + ")"
    best = max(ok, key=lambda n: (ok[n]["win_rate_gold"], -ok[n]["kl"]))
    w, kl = ok[best]["win_rate_gold"], ok[best]["kl"]
    if w < min_win_rate:
        return None, f"best policy {best} wins {w:.1%} of prompts vs SFT, below the {min_win_rate:.1%} threshold"
    return best, f"{best} wins {w:.1%} vs SFT (>= {min_win_rate:.1%}) at KL {kl:.2f} <= {max_kl}"


def champion_gate(metrics: dict[str, dict], run_infos: dict[str, dict], cfg, policy_model: str, registry) -> dict:
    """Apply the gate (cfg: eval.champion) to the eval metrics {policy: metrics}: set cfg.alias on the winner's
    registered version of `policy_model` (its run_infos entry names the version), or leave the alias where it
    is and say so. registry: promote(name, version, alias, tags) and alias_version(name, alias) -> str | None.
    Returns the decision written to metrics/champion.json."""
    best, why = choose_champion(metrics, cfg.max_kl, cfg.min_win_rate)
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
        incumbent = registry.alias_version(policy_model, cfg.alias)
        decision["reason"] += (
            f"; {cfg.alias} stays on version {incumbent}" if incumbent else f"; no version has the {cfg.alias} alias"
        )
    return decision


def evaluate_policies(
    policy_dirs: dict, sft_dir, rm_dir, cfg, scorer_path: str, prompts: list, texts: list[str], device: str, dtype
) -> dict:
    """Every policy in policy_dirs ({name: dir}) vs the SFT model on held-out prompts (the first
    cfg.max_prompts) and held-out texts for the perplexity (the first cfg.ppl_texts).

    cfg: the `eval` section. The SFT model samples once; each policy samples the same prompts with the same
    seed. Returns {name: {"metrics": ..., "samples": [rows for a person to read]}}, "sft" included (its win
    rates are 0.5 and its KL 0 by definition).
    """
    scorer = load_scorer(scorer_path)
    prompts = prompts[: cfg.max_prompts]
    texts = texts[: cfg.ppl_texts]
    sft, tok = load_lm(sft_dir, device)
    rm, _ = load_scalar_model(rm_dir, device)
    norm = load_reward_norm(rm_dir)
    args = (tok, prompts, cfg.generation, cfg.seed, device, dtype, cfg.max_prompt_len, scorer, rm.eval(), norm)
    greedy = cfg.generation.model_copy(update={"temperature": 0.0})
    base = policy_samples(sft, *args)
    base_greedy = policy_samples(sft, tok, prompts, greedy, *args[3:]) if cfg.greedy else None
    out = {}
    for name, path in {"sft": None, **policy_dirs}.items():
        policy = sft if path is None else load_lm(path, device)[0]
        pol = base if path is None else policy_samples(policy, *args)
        m = compare(policy, sft, tok, pol, base, device, dtype, cfg.batch_size)
        m["perplexity"] = perplexity(policy, tok, texts, cfg.ppl_max_length, cfg.batch_size, device, dtype)
        if cfg.greedy:  # greedy decoding: the policy's mode, judged the same way
            g = base_greedy if path is None else policy_samples(policy, tok, prompts, greedy, *args[3:])
            m.update(
                greedy_gold_reward=sum(g["gold"]) / len(g["gold"]),
                greedy_win_rate_gold=win_rate(g["gold"], base_greedy["gold"]),
            )
        rows = [
            {
                "prompt": prompts[a["prompt_index"]],
                "sft_response": a["text"],
                "policy_response": b["text"],
                "gold_sft": ga,
                "gold_policy": gb,
                "rm_sft": ra,
                "rm_policy": rb,
            }
            for a, b, ga, gb, ra, rb in zip(
                base["samples"], pol["samples"], base["gold"], pol["gold"], base["rm"], pol["rm"]
            )
        ]
        out[name] = {"metrics": m, "samples": rows}
        print(f"eval {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    return out
