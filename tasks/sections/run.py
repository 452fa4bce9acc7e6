"""The sections about a whole run rather than one stage: which algorithms run, evaluation and its champion gate,
compute, tracking, and the frontier and seed sweeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.sections.base import Section, distinct, no_nan
from tasks.sections.data import Generation
from tasks.sections.stages import KL_KNOBS, PolicyStage, Stage

JUDGES = ("gold", "rm", "heldout_rm", "lm")  # the named judges; any other is a 'module:function'


class PipelineConfig(Section):
    algorithms: list[PolicyStage] = Field(
        default_factory=lambda: ["ppo", "dpo", "rto"],
        description="which policy stages do work (the others record 'skipped'); rto needs dpo",
    )
    prompt_overflow: Literal["truncate", "refuse"] = Field(
        "truncate", description="prompts over a stage's max_prompt_len: keep their last tokens (counted) or stop"
    )

    @model_validator(mode="after")
    def _rto_needs_dpo(self):
        if "rto" in self.algorithms and "dpo" not in self.algorithms:
            raise ValueError("rto uses the dpo stage's model: add dpo to pipeline.algorithms")
        return self


class ChampionConfig(Section):
    max_kl: float = Field(
        5.0, gt=0, description="a policy is a candidate only if its mean KL to SFT (nats) is at most this"
    )
    min_win_rate: float = Field(
        0.55,
        ge=0,
        le=1,
        description="a candidate needs the lower end of its win-rate interval vs SFT (champion.judge's) at least this",
    )
    alias: str = Field("champion", min_length=1, description="registry alias set on the winning model version")
    judge: str = Field(
        "auto",
        min_length=1,
        description="whose win rate the gate reads: one of eval.judges; auto: gold where the task has one, else "
        "heldout_rm, else lm (never the rm the policies optimize unless it is the only judge)",
    )

    min_judge_agreement: float | None = Field(
        0.5,
        ge=0,
        lt=1,
        description="promote only if the judge's agreement with the held-out labels (metrics/eval/judges.json) has "
        "its interval's lower end above this (0.5: better than chance); null: no check",
    )

    _m = field_validator("max_kl", "min_win_rate", "min_judge_agreement", mode="before")(no_nan)


class EvalConfig(Section):
    split: Literal["eval", "tune"] = Field(
        "eval",
        description="prompts to evaluate on: eval (the reported numbers) or tune (carved from the policy "
        "prompts, for choosing hyperparameters without seeing the eval prompts)",
    )
    max_prompts: int | None = Field(None, ge=2, description="use the first N prompts of the split (None: all)")
    samples_per_prompt: int = Field(
        2, ge=1, description="samples per prompt and policy, compared pairwise with SFT's and averaged per prompt"
    )
    ci_level: float = Field(0.95, gt=0, lt=1, description="level of every reported interval")
    _c = field_validator("ci_level", mode="before")(no_nan)
    bootstrap_resamples: int = Field(2000, ge=100, description="bootstrap resamples of the prompts")
    seed: int = Field(1234, description="sampling and bootstrap seed (same for every policy)")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    ppl_max_length: int = Field(128, ge=8, description="tokens per text for held-out perplexity")
    ppl_texts: int = Field(32, ge=1, description="held-out pretraining texts for the perplexity")
    batch_size: int = Field(16, ge=1, description="forward-only batch size")
    generation: Generation = Field(
        default_factory=lambda: Generation(batch_size=64), description="evaluation sampling (DPO paper: T = 1)"
    )
    greedy: bool = Field(False, description="also decode greedily and report greedy_gold_reward / greedy_win_rate_gold")
    judges: Literal["auto"] | list[str] = Field(
        "auto",
        description="who compares each policy's responses with SFT's: gold (sample.gold_scorer), rm (the trained "
        "RM, the proxy), heldout_rm (an RM trained on eval.heldout_share of the comparisons, by prompt, that rm and "
        "dpo never see), lm (a pairwise LM judge: eval.judge_model), 'module:function' (pairwise f(prompt, a, b) -> "
        "P(a > b), or pointwise f(text) -> score); each gives its own win rate, LC win rate and W/D/L. auto: "
        "gold (simulated labels only: the scorer that labeled them), heldout_rm, rm",
    )
    heldout_share: float = Field(
        0.2,
        gt=0,
        le=0.5,
        description="share of the labeled comparisons' prompts kept from rm and dpo for the heldout_rm judge (and "
        "for measuring every judge's agreement with the labels)",
    )
    _h = field_validator("heldout_share", mode="before")(no_nan)
    judge_model: str | None = Field(
        None,
        description="the lm judge: what base.model takes (a pypi: GGUF member, a hub id, a local dir or .gguf), "
        "materialized by the judge stage into models/judge; its chat template when it has one",
    )
    judge_sha256: str | None = Field(None, description="sha256 of the judge's GGUF file (required for a pypi: judge)")

    @field_validator("judges")
    @classmethod
    def _known_judges(cls, v):
        if v == "auto":
            return v
        for entry in v:
            mod, _, fn = entry.partition(":")
            if entry not in JUDGES and not (mod and fn):
                raise ValueError(f"{entry!r} is not {', '.join(JUDGES)} or 'module:function'")
        if not v:
            raise ValueError("no judge: list at least one (or auto)")
        if len(set(v)) != len(v):
            raise ValueError("a judge is listed twice")
        return v

    @model_validator(mode="after")
    def _lm_needs_a_model(self):
        if self.judges != "auto" and "lm" in self.judges and not self.judge_model:
            raise ValueError("eval.judges has lm: set eval.judge_model (a model as base.model takes it)")
        return self


class ComputeConfig(Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train: auto picks cuda when present")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 where the device computes it natively (GPU, CPU with amx/avx512_bf16)"
    )
    fp32_stages: list[Stage] = Field(
        default_factory=lambda: ["dpo"],
        description="stages that compute in fp32 whatever precision resolves to (bf16 moved DPO beyond seed noise)",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: torch's default)")
    num_processes: int = Field(
        1,
        ge=1,
        description="training processes for the training stages: > 1 runs them under "
        "`accelerate launch`, data-parallel (DDP: gloo on CPU, NCCL on GPUs)",
    )
    accelerate_config: str | None = Field(
        None,
        description="an accelerate config file (FSDP, DeepSpeed, several "
        "machines) for accelerate launch; None: plain DDP",
    )


class TrackingConfig(Section):
    experiment: str = Field("rlhf-pipeline", description="MLflow experiment name")
    register_models: bool = Field(True, description="register each trained model as a new model version")
    registered_prefix: str = Field("rlhf", description="registered model names are '<prefix>-<stage>'")


class FrontierConfig(Section):
    ppo_kl_coef: list[float] = Field(
        default_factory=lambda: [0.005, 0.05, 0.1],
        description="ppo.kl.coef of each sweep experiment (one point per value)",
    )
    dpo_kl_coef: list[float] = Field(
        default_factory=lambda: [0.03, 0.3, 1.0], description="dpo.kl_coef of each sweep experiment"
    )
    rto_kl_coef: list[float] = Field(
        default_factory=lambda: [0.003, 0.03, 0.1], description="rto.kl.coef of each sweep experiment"
    )
    grpo_kl_coef: list[float] = Field(
        default_factory=lambda: [0.01, 0.1, 0.3], description="grpo.kl.coef of each sweep experiment"
    )
    rloo_kl_coef: list[float] = Field(
        default_factory=lambda: [0.005, 0.05, 0.1], description="rloo.kl.coef of each sweep experiment"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1],
        description="each value of the sweep runs once per seed (the policy stages' seed); points average them",
    )
    default_seeds: bool = Field(
        True, description="also run the default coefficients under each seed but the workspace's: its point gets bars"
    )
    jobs: int = Field(1, ge=1, description="experiments run at once by `dvc queue start -j`")

    _s = field_validator("seeds")(distinct)

    @model_validator(mode="after")
    def _same_length(self):
        lists = [getattr(self, name) for name in KL_KNOBS]
        if len({len(v) for v in lists}) != 1 or not lists[0]:
            raise ValueError(
                f"{', '.join(KL_KNOBS)} need the same, non-zero number of values (experiment i runs value i of each)"
            )
        if min(sum(lists, [])) <= 0:
            raise ValueError("every coefficient must be > 0")
        return self


class SeedsConfig(Section):
    values: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        description="the seeds: one DVC experiment each (make seeds N=3: 0..N-1); one more adds to the recorded ones",
    )
    stages: list[Stage] = Field(
        default_factory=lambda: ["ppo", "dpo", "rto"],
        description="stages whose seed is set (rto, grpo, rloo take ppo's unless they set one); the others are "
        "shared: same data and RM",
    )
    level: float = Field(0.95, gt=0, lt=1, description="level of the interval over seeds (Student's t)")
    jobs: int = Field(1, ge=1, description="experiments run at once by `dvc queue start -j`")

    _s = field_validator("values")(distinct)
    _l = field_validator("level", mode="before")(no_nan)

    @model_validator(mode="after")
    def _some(self):  # one seed is enough to add to those recorded before (the report needs two in all)
        if not self.values:
            raise ValueError("seeds.values needs at least one seed")
        return self
