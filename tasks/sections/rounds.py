"""The `rounds` section: iterated RLHF (InstructGPT: "more comparison data is collected on the current best policy,
which is used to train a new RM and then a new policy"; Llama 2's rounds; RLHFlow's iterative DPO)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.sections.base import Section
from tasks.sections.stages import POLICY_STAGES

SampleFrom = Literal[("champion", *POLICY_STAGES)]


class RoundsConfig(Section):
    count: int = Field(
        1, ge=1, description="rounds of sample -> labels -> rm -> policies -> eval -> champion (1: one pass)"
    )
    prompts: int = Field(
        128,
        ge=1,
        description="fresh prompts per later round: its own slice of the policy prompts, no earlier round's",
    )
    sample_from: SampleFrom = Field(
        "champion",
        description="who writes a later round's comparisons: the run's standing champion after the previous "
        "round (the gate's rule within this run's rounds; SFT if none cleared it), or that round's policy of the "
        "named stage",
    )
    rm: Literal["retrain", "continue"] = Field(
        "retrain",
        description="retrain: a new RM from SFT on every round's comparisons so far (InstructGPT); continue: the "
        "previous round's RM trained on this round's comparisons",
    )
    policies: Literal["restart", "continue"] = Field(
        "restart",
        description="restart: each policy from SFT again (InstructGPT); continue: dpo from its previous round's "
        "policy on this round's pairs (RLHFlow, Llama 2); the KL reference is SFT either way",
    )
    dpo_pairs: Literal["all", "max_min"] = Field(
        "max_min",
        description="dpo's pairs in a later round: all K-choose-2 labeled pairs, or best-vs-worst (RLHFlow)",
    )
