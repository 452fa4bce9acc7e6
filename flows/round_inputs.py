"""What a later round's stages read (params.yaml: rounds): who samples its comparisons and on which prompts, the
pairs its RM and DPO train on, and the model each starts from. Round 1 reads what the pipeline always read."""

from __future__ import annotations

import json
from pathlib import Path

from flows.paths import METRICS, MODELS, ROUND, comparisons_dir, in_round, model_dir
from tasks import config
from tasks.runtime.errors import PipelineError
from tasks.runtime.files import read_jsonl


def prompt_slice(policy_prompts: list, params: dict, r: int = ROUND) -> list:
    """Round r's fresh comparison prompts: the (r-1)-th slice of rounds.prompts policy prompts (round 1's
    comparisons come from the comparison split, which no policy trains on)."""
    cfg = config.rounds(params)
    need = (cfg.count - 1) * cfg.prompts
    if need > len(policy_prompts):
        raise PipelineError(
            f"params.yaml: rounds: {cfg.count - 1} later round(s) x rounds.prompts={cfg.prompts} need {need} policy "
            f"prompts; data/prepared/policy.jsonl has {len(policy_prompts)} (lower rounds.prompts or the count, or "
            "raise prepare.splits.policy)"
        )
    return policy_prompts[(r - 2) * cfg.prompts : (r - 1) * cfg.prompts]


def champion_file(r: int) -> Path:
    return in_round(METRICS, r) / "champion.json"


def standing_champion(r: int) -> tuple[str, int] | None:
    """(policy stage, round) of the champion standing after round r (its champion stage's record), or None."""
    path = champion_file(r)
    if not path.exists():
        raise PipelineError(f"{path.relative_to(METRICS.parent)} is missing: run dvc repro champion")
    m = json.loads(path.read_text())
    return (m["standing_policy"], int(m["standing_round"])) if m.get("standing_policy") else None


def sampler_dir(params: dict, r: int = ROUND) -> Path:
    """The model that writes round r's comparisons: the run's champion standing after round r-1 (SFT while none
    stands), or round r-1's policy of rounds.sample_from."""
    if r == 1:
        return MODELS / "sft"
    cfg = config.rounds(params)
    if cfg.sample_from != "champion":
        return model_dir(cfg.sample_from, r - 1)
    standing = standing_champion(r - 1)
    return model_dir(*standing) if standing else MODELS / "sft"


def pairs_upto(r: int, name: str = "pairs.jsonl") -> list[dict]:
    """Every round's labeled pairs from round 1 to r, in round order."""
    return [p for i in range(1, r + 1) for p in read_jsonl(comparisons_dir(i) / name)]


def rm_inputs(params: dict, r: int = ROUND) -> tuple[Path, list[dict]]:
    """(model the RM starts from, pairs it trains on): retrain from SFT on every round's pairs so far, or continue
    the previous round's RM on this round's pairs."""
    if r > 1 and config.rounds(params).rm == "continue":
        return model_dir("rm", r - 1), read_jsonl(comparisons_dir(r) / "pairs.jsonl")
    return MODELS / "sft", pairs_upto(r)


def policy_start(stage: str, params: dict, r: int = ROUND) -> Path | None:
    """Where a policy stage starts: None (SFT), or with rounds.policies: continue its previous round's policy
    (its KL reference stays SFT)."""
    if r > 1 and config.rounds(params).policies == "continue":
        return model_dir(stage, r - 1)
    return None


def dpo_inputs(params: dict, r: int = ROUND) -> tuple[Path, list[dict]]:
    """(model DPO starts from, pairs): from SFT on every round's pairs, or (rounds.policies: continue) from its
    previous round's policy on this round's pairs. Its KL reference is SFT either way."""
    if start := policy_start("dpo", params, r):
        return start, read_jsonl(comparisons_dir(r) / "pairs.jsonl")
    return MODELS / "sft", pairs_upto(r)
