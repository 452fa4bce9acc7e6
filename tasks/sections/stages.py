"""The one table of the pipeline's stages that code reads: which train a policy, which sample their own rollouts,
which prompt split each generates from, and the params key of each policy stage's KL strength. params.yaml's
sections, the pipeline flow and its run form, the frontier sweep, the seeds and eval all take their lists here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StageInfo:
    name: str
    policy: bool = False  # trains a policy from SFT (pipeline.algorithms chooses among these)
    online: bool = False  # samples and scores its own rollouts (ppo's machinery)
    prompt_split: str | None = None  # the prepared split it generates from (its section's max_prompt_len applies)
    kl_knob: str | None = None  # the params key of its KL strength (the run form and the frontier sweep set it)


STAGES = {
    s.name: s
    for s in (
        StageInfo("sft"),
        StageInfo("sample", prompt_split="comparison"),
        StageInfo("rm"),
        StageInfo("heldout_rm"),  # the held-out judge: an RM on comparisons rm and dpo never see
        StageInfo("ppo", policy=True, online=True, prompt_split="policy", kl_knob="ppo.kl.coef"),
        StageInfo("dpo", policy=True, kl_knob="dpo.kl_coef"),
        StageInfo("rto", policy=True, online=True, prompt_split="policy", kl_knob="rto.kl.coef"),
        StageInfo("grpo", policy=True, online=True, prompt_split="policy", kl_knob="grpo.kl.coef"),
        StageInfo("rloo", policy=True, online=True, prompt_split="policy", kl_knob="rloo.kl.coef"),
        StageInfo("judge"),  # the lm judge's model (eval.judge_model)
        StageInfo("eval_sft", prompt_split="eval"),  # SFT's side of eval, cached for every experiment
        StageInfo("eval", prompt_split="eval"),
    )
}
POLICY_STAGES = tuple(name for name, s in STAGES.items() if s.policy)
ONLINE_STAGES = tuple(name for name, s in STAGES.items() if s.online)
# frontier field / run-form field -> the params key it sets: <stage>_kl_coef for every policy stage
KL_KNOBS = {f"{name}_kl_coef": STAGES[name].kl_knob for name in POLICY_STAGES}

PolicyStage = Literal[POLICY_STAGES]
Stage = Literal[tuple(STAGES)]
