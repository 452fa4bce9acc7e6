"""Labeled comparisons as the reward model and DPO train on them: grouped by prompt, each completion tokenized
(and later put through the model) once however many pairs it is in, the held-out prompts chosen by a hash of the
prompt id so that rm and dpo hold out the same ones (tasks/data/splits.py: is_heldout)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from tasks.data.splits import is_heldout
from tasks.lm.batching import encode_prompt
from tasks.lm.generation import pack


@dataclass(frozen=True)
class Pair:
    """One labeled comparison inside a group."""

    chosen: int  # index of the preferred completion in the group's responses
    rejected: int
    margin: float  # subtracted inside the Bradley–Terry sigmoid (rm.use_margin), else 0
    gold_chosen: float | None  # the gold scorer's scores, when the labeler had them
    gold_rejected: float | None


@dataclass(frozen=True)
class ComparisonGroup:
    """A prompt, its distinct completions (token ids) and the labeled pairs among them."""

    prompt_id: str
    query: list[int]  # the prompt's token ids (its last max_prompt_len)
    responses: list[list[int]]  # each completion once, EOS appended when it ended
    pairs: list[Pair]
    ref: list[float] | None = None  # DPO: Σ_t log π_ref of each response, computed once before training


def response_ids(tok, text: str, ended: bool, max_len: int) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"][:max_len]
    return ids + [tok.eos_token_id] if ended and len(ids) < max_len else ids or [tok.eos_token_id]


def build_groups(pairs: list[dict], tok, cfg, use_margin: bool = False):
    """Pairs (records of data/comparisons/pairs.jsonl) grouped by prompt: (train groups, held-out groups).

    cfg needs max_length, max_prompt_len and heldout_frac (the RM's and DPO's configs have them).
    """
    max_resp = cfg.max_length - cfg.max_prompt_len
    queries: dict[str, list[int]] = {}
    responses: dict[str, list[list[int]]] = {}
    index: dict[str, dict[tuple, int]] = {}
    grouped: dict[str, list[Pair]] = {}
    for p in pairs:
        pid = p["prompt_id"]
        if pid not in queries:
            queries[pid] = encode_prompt(p["prompt"], tok, cfg.max_prompt_len)
            responses[pid], index[pid], grouped[pid] = [], {}, []
        idx = []
        for side in ("chosen", "rejected"):
            key = (p[side], p[f"{side}_ended"])
            if key not in index[pid]:
                index[pid][key] = len(responses[pid])
                responses[pid].append(response_ids(tok, *key, max_resp))
            idx.append(index[pid][key])
        margin = float(p.get("margin", 0.0)) if use_margin else 0.0
        grouped[pid].append(Pair(*idx, margin, p.get("gold_chosen"), p.get("gold_rejected")))
    groups = [ComparisonGroup(pid, queries[pid], responses[pid], grouped[pid]) for pid in queries]
    return (
        [g for g in groups if not is_heldout(g.prompt_id, cfg.heldout_frac)],
        [g for g in groups if is_heldout(g.prompt_id, cfg.heldout_frac)],
    )


def best_vs_worst(group: ComparisonGroup) -> ComparisonGroup:
    """One pair per prompt (RLHFlow's iterative DPO, `max_min`): the completion that won the largest share of its
    labeled comparisons over the one that won the smallest, s_i = wins_i / comparisons_i (ties: the lower
    index). Where every share is equal (a cycle of labels) no completion is better: the first labeled pair stays.
    The kept pair carries the completions' gold scores when the labeler had them."""
    wins: dict[int, int] = {}
    seen: dict[int, int] = {}
    gold: dict[int, float | None] = {}
    for pair in group.pairs:
        for idx, won, g in ((pair.chosen, 1, pair.gold_chosen), (pair.rejected, 0, pair.gold_rejected)):
            wins[idx], seen[idx], gold[idx] = wins.get(idx, 0) + won, seen.get(idx, 0) + 1, g
    share = {i: wins[i] / seen[i] for i in sorted(seen)}
    best, worst = max(share, key=share.get), min(share, key=share.get)
    if share[best] == share[worst]:
        return replace(group, pairs=group.pairs[:1])
    return replace(group, pairs=[Pair(best, worst, 0.0, gold[best], gold[worst])])


def collate_groups(groups: list[ComparisonGroup], pad_id: int) -> dict:
    """All completions of the groups in one packed batch + index tensors of the pairs."""
    queries, responses, chosen, rejected, margins, group_ids = [], [], [], [], [], []
    for group_id, g in enumerate(groups):
        offset = len(responses)
        queries += [g.query] * len(g.responses)
        responses += g.responses
        for pair in g.pairs:
            chosen.append(offset + pair.chosen)
            rejected.append(offset + pair.rejected)
            margins.append(pair.margin)
            group_ids.append(group_id)
    batch = pack(queries, responses, pad_id)
    batch.update(
        chosen=torch.tensor(chosen),
        rejected=torch.tensor(rejected),
        margin=torch.tensor(margins),
        group=torch.tensor(group_ids),
    )
    return batch


def prompt_hits(groups: list[ComparisonGroup], rewards: list[list[float]]) -> dict[str, list[int]]:
    """Per prompt: how many of its pairs the rewards order like the label (hits, of totals) and like the noiseless
    gold order (gold_hits, of gold_totals: gold ties skipped). Paired comparisons of two RMs resample these."""
    out: dict[str, list[int]] = {"hits": [], "totals": [], "gold_hits": [], "gold_totals": []}
    for g, r in zip(groups, rewards):
        right = [r[pair.chosen] > r[pair.rejected] for pair in g.pairs]
        ranked = [ok == (p.gold_chosen > p.gold_rejected) for p, ok in zip(g.pairs, right) if _gold_ranked(p)]
        out["hits"].append(sum(right))
        out["totals"].append(len(right))
        out["gold_hits"].append(sum(ranked))
        out["gold_totals"].append(len(ranked))
    return out


def _gold_ranked(pair: Pair) -> bool:
    return pair.gold_chosen is not None and pair.gold_rejected is not None and pair.gold_chosen != pair.gold_rejected


def accuracies(groups: list[ComparisonGroup], rewards: list[list[float]]) -> dict:
    """Share of pairs the rewards order like the label, and like the noiseless gold order (gold ties skipped)."""
    per_prompt = prompt_hits(groups, rewards)
    n = sum(per_prompt["totals"])
    out = {"accuracy": sum(per_prompt["hits"]) / max(n, 1), "n_pairs": n}
    if gold_n := sum(per_prompt["gold_totals"]):
        out["gold_accuracy"] = sum(per_prompt["gold_hits"]) / gold_n
    return out
