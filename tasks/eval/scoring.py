"""Pointwise scores of sampled responses: a gold-like scorer's f(text) and a reward model's normalized reward.
Shapes: one float per sample, in the samples' order."""

from __future__ import annotations

import torch

from tasks.label.gold import scored_text
from tasks.lm.generation import pack
from tasks.runtime.context import RunContext, to_device
from tasks.train.reward_model import normalized, sequence_rewards


@torch.no_grad()
def rm_scores(rm, norm: dict, samples: list[dict], pad_id: int, ctx: RunContext, batch_size: int = 16) -> list[float]:
    """The RM's normalized reward of each sample ({query, response} token ids)."""
    out = []
    for i in range(0, len(samples), batch_size):
        s = samples[i : i + batch_size]
        packed = to_device(pack([x["query"] for x in s], [x["response"] for x in s], pad_id), ctx.device)
        with ctx.autocast():
            r = sequence_rewards(rm, packed, norm.get("pooling", "last")).float()
            out += normalized(r, norm).tolist()
    return out


def gold_scores(scorer, prompts: list, samples: list[dict]) -> list[float]:
    """A pointwise scorer's score of each sample, reading what a gold scorer reads (tasks/label/gold.py)."""
    return [float(scorer(scored_text(prompts[s["prompt_index"]], s["text"]))) for s in samples]
