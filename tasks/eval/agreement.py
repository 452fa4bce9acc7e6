"""How far each judge can be trusted: its agreement, on the held-out comparisons no policy trained on
(data/comparisons/heldout.jsonl), with the labels there (human, dataset or simulated) and with the gold scorer
where the task has one — each with a bootstrap interval over prompts, so a weak judge is shown weak.

A judge's preference on a labeled pair (chosen c, rejected r) is 1 when it prefers c, 0 when it prefers r, ½
on a tie: pointwise judges compare their scores s(c) and s(r); pairwise judges are asked in both orders and
orders that disagree are a tie (as in tasks/eval/judges.py). Agreement with the labels = mean preference;
with gold = the mean of the preference for gold's choice, over the pairs gold does not tie. The `heldout_rm`
judge trained on most of these pairs: it is measured on its own validation prompts only (rm.heldout_frac of
them, tasks/data/splits.py: is_heldout), never on a pair it trained on.
"""

from __future__ import annotations

import numpy as np

from tasks.data.splits import is_heldout
from tasks.eval import stats
from tasks.eval.judges import in_both_orders
from tasks.eval.scoring import rm_scores
from tasks.label.gold import scored_text
from tasks.lm.batching import encode_prompt
from tasks.train.comparisons import response_ids


def preference(a: list[float], b: list[float]) -> np.ndarray:
    """(n,) 1 where a > b, ½ where equal, 0 where a < b."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return (a > b) + 0.5 * (a == b)


def per_prompt_interval(values: np.ndarray, prompt_ids: list[str], resamples: int, seed: int, level: float) -> dict:
    """Mean of the per-prompt means of `values` (a prompt's pairs are not independent of each other) with its
    bootstrap interval over prompts."""
    ids = sorted(set(prompt_ids))
    where = {pid: i for i, pid in enumerate(ids)}
    sums, counts = np.zeros(len(ids)), np.zeros(len(ids))
    np.add.at(sums, [where[p] for p in prompt_ids], values)
    np.add.at(counts, [where[p] for p in prompt_ids], 1)
    indices = stats.bootstrap_indices(len(ids), resamples, seed)
    return stats.interval(sums / counts, indices, level)


def rm_preference(rm, norm: dict, pairs: list[dict], tok, ctx, lengths: tuple[int, int]) -> np.ndarray:
    """A reward model's preference on each pair, reading the pair as it trained on pairs (lengths: the prompt's
    and the response's token budgets)."""
    max_prompt, max_response = lengths
    sides = []
    for side in ("chosen", "rejected"):
        samples = [
            {
                "query": encode_prompt(p["prompt"], tok, max_prompt),
                "response": response_ids(tok, p[side], p.get(f"{side}_ended", True), max_response),
            }
            for p in pairs
        ]
        sides.append(rm_scores(rm, norm, samples, tok.pad_token_id, ctx))
    return preference(*sides)


def judge_preferences(pairs: list[dict], scoring, pairwise: dict, tok, lengths: tuple[int, int]) -> dict:
    """{judge: (n_pairs,) preference for the chosen response} for every judge of the evaluation."""
    prefs = {}
    for name, fn in scoring.scorers.items():
        c = [float(fn(scored_text(p["prompt"], p["chosen"]))) for p in pairs]
        r = [float(fn(scored_text(p["prompt"], p["rejected"]))) for p in pairs]
        prefs[name] = preference(c, r)
    for name, (rm, norm) in scoring.rms.items():
        prefs[name] = rm_preference(rm, norm, pairs, tok, scoring.ctx, lengths)
    for name, judge in pairwise.items():
        prefs[name] = in_both_orders(judge, [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs])
    return prefs


def judge_agreement(judging, scoring, pairwise: dict, tok, cfg) -> dict:
    """Each judge's agreement with the held-out labels and with gold (where gold judges), with intervals:
    {label_agreement_<judge>[_se|_ci_low|_ci_high], gold_agreement_<judge>..., n_pairs_<judge>}."""
    pairs = judging.heldout_pairs
    ids = [p["prompt_id"] for p in pairs]
    lengths = judging.rm_lengths
    prefs = judge_preferences(pairs, scoring, pairwise, tok, lengths)
    own_validation = np.array([is_heldout(pid, judging.rm_heldout_frac) for pid in ids])
    gold = prefs.get("gold")
    out = {}
    for name, pref in prefs.items():
        keep = own_validation if name == "heldout_rm" else np.ones(len(pairs), dtype=bool)
        if not keep.any():
            continue
        kept_ids = [pid for pid, k in zip(ids, keep) if k]
        iv = per_prompt_interval(pref[keep], kept_ids, cfg.bootstrap_resamples, cfg.seed, cfg.ci_level)
        out |= stats.flat(f"label_agreement_{name}", iv) | {f"n_pairs_{name}": int(keep.sum())}
        if gold is not None and name != "gold":
            decided = keep & (gold != 0.5)
            if decided.any():
                agree = np.where(gold[decided] == 1.0, pref[decided], 1.0 - pref[decided])
                decided_ids = [pid for pid, d in zip(ids, decided) if d]
                iv = per_prompt_interval(agree, decided_ids, cfg.bootstrap_resamples, cfg.seed, cfg.ci_level)
                out |= stats.flat(f"gold_agreement_{name}", iv)
    return out
