"""Labelers turn prompts (and, for some, sampled completions) into comparisons.

A labeler is a class with `needs_samples: bool` and `label(groups) -> list[dict]`: a built-in one in LABELERS
(made as `Labeler(cfg, base_dir)`), or one of yours named in params as 'module:Class' (made as `Class(cfg)`).
Comparisons use TRL's preference format plus a prompt id:
{"prompt_id", "prompt", "chosen", "rejected", "chosen_ended", "rejected_ended", ...}.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
from pathlib import Path

import torch

from tasks.data.splits import load_records
from tasks.lm.batching import render_completion
from tasks.losses import preference_probability
from tasks.runtime.errors import PipelineError


def prompt_id(prompt) -> str:
    return hashlib.sha1(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:12]


class SimulatedLabeler:
    """Simulated annotators: a ≻ b with probability σ((g(a) − g(b)) / τ), seeded; every K-choose-2 pair kept."""

    needs_samples = True

    def __init__(self, cfg, base_dir: Path | None = None):
        self.tau, self.seed = cfg.tau, cfg.seed

    def label(self, groups: list[dict]) -> list[dict]:
        g = torch.Generator().manual_seed(self.seed)
        out = []
        for grp in groups:
            for a, b in itertools.combinations(grp["completions"], 2):
                p = preference_probability(torch.tensor(a["gold"]), torch.tensor(b["gold"]), self.tau).item()
                first = torch.rand((), generator=g).item() < p
                c, r = (a, b) if first else (b, a)
                out.append(
                    {
                        "prompt_id": grp["prompt_id"],
                        "prompt": grp["prompt"],
                        "chosen": c["text"],
                        "rejected": r["text"],
                        "chosen_ended": c["ended"],
                        "rejected_ended": r["ended"],
                        "gold_chosen": c["gold"],
                        "gold_rejected": r["gold"],
                        "p_chosen": p if first else 1 - p,
                    }
                )
        return out


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Anthropic HH: two full dialogues sharing a prompt; the prompt ends at the last 'Assistant:' they share."""
    common = 0
    for x, y in zip(chosen, rejected):
        if x != y:
            break
        common += 1
    cut = chosen.rfind("\n\nAssistant:", 0, common + 1)
    if cut < 0:
        raise ValueError("no shared '\\n\\nAssistant:' turn")
    cut += len("\n\nAssistant:")
    return chosen[:cut], chosen[cut:], rejected[cut:]


class DatasetLabeler:
    """Human comparisons from a local JSONL or a Hugging Face dataset: TRL preference format
    (prompt/chosen/rejected, strings or messages; implicit prompt allowed) or Anthropic HH (chosen/rejected
    full dialogues). No sampling."""

    needs_samples = False

    def __init__(self, cfg, base_dir: Path):
        self.base_dir = base_dir
        if not cfg.dataset:
            raise PipelineError("params.yaml: sample.dataset: required when sample.labeler is 'dataset'")
        self.source = cfg.dataset

    def label(self, groups=None) -> list[dict]:
        recs, where = load_records(self.source, self.base_dir)
        out = []
        for n, r in enumerate(recs, 1):
            for key in ("chosen", "rejected"):
                if not isinstance(r.get(key), (str, list)) or not r.get(key):
                    raise PipelineError(f"{where}:{n}: missing or empty '{key}'")
            prompt, chosen, rejected = r.get("prompt"), r["chosen"], r["rejected"]
            if prompt is None and isinstance(chosen, str):
                try:
                    prompt, chosen, rejected = split_hh(chosen, rejected)
                except ValueError as e:
                    raise PipelineError(f"{where}:{n}: no 'prompt' and not an HH dialogue pair ({e})") from None
            elif prompt is None:  # conversational with implicit prompt
                prompt, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
            chosen, rejected = render_completion(chosen), render_completion(rejected)
            if not chosen.strip() or not rejected.strip():
                raise PipelineError(f"{where}:{n}: empty completion after removing the prompt")
            out.append(
                {
                    "prompt_id": prompt_id(prompt),
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "chosen_ended": True,
                    "rejected_ended": True,
                }
            )
        return out


class PeopleLabeler:
    """Your team ranks the completions on the labeling page: the sample stage hands them to the label store and
    the labels stage turns the rankings into comparisons (tasks/label/export.py), so none are made here."""

    needs_samples = True

    def __init__(self, cfg, base_dir: Path | None = None):
        pass

    def label(self, groups: list[dict]) -> list[dict]:
        return []


LABELERS = {"simulated": SimulatedLabeler, "dataset": DatasetLabeler, "people": PeopleLabeler}


def make_labeler(cfg, base_dir: Path):
    """The labeler named by sample.labeler; relative dataset paths are read from base_dir."""
    name = cfg.labeler
    if name in LABELERS:
        return LABELERS[name](cfg, base_dir)
    mod, _, cls = name.partition(":")
    try:
        return getattr(importlib.import_module(mod), cls)(cfg)
    except (ImportError, AttributeError, ValueError) as e:
        raise PipelineError(f"params.yaml: sample.labeler: unknown labeler '{name}' ({e})") from None
