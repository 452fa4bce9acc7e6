"""What every stage flow shares: paths, validation before work, one-line errors, metrics files."""
from __future__ import annotations

import csv
from pathlib import Path

from tasks import config
from tasks.common import ROOT, atomic_path, die_cleanly, write_json

MODELS = ROOT / "models"
METRICS = ROOT / "metrics"


def run_stage(flow, sections: tuple[str, ...], preflight=None) -> None:
    """Validate the params sections a stage reads (and, with `preflight(params)`, its inputs) before
    anything starts, then run its flow; user errors print one line and exit 2."""
    def main():
        params = config.read_params()
        for s in sections:
            config.load(s, params)
        if "compute" in sections:  # a cuda/bf16 request this machine cannot honour fails here, not mid-stage
            from tasks import distributed
            from tasks.common import pick_device

            compute = config.load("compute", params)
            pick_device(compute)
            if compute.num_processes > 1 and flow.name in distributed.STAGES:
                distributed.check_divisible(flow.name, compute.num_processes)
        if "base" in sections:
            check_model_source(config.load("base", params).model)
        if flow.name in PROMPT_SPLITS:
            check_prompt_lengths(params, flow.name)
        if preflight:
            preflight(params)
        flow()
    die_cleanly(main)


# stage -> (prompt split it generates from, section whose max_prompt_len applies)
PROMPT_SPLITS = {"sample": ("comparison", "sample"), "ppo": ("policy", "ppo"), "rto": ("policy", "rto"),
                 "eval": ("eval", "eval")}


def check_prompt_lengths(params: dict, stage: str) -> int:
    """Prompts longer than the stage's max_prompt_len tokens: counted and truncated to their end
    (pipeline.prompt_overflow: truncate), or refused with one line (refuse). Returns the count."""
    from transformers import AutoTokenizer

    from tasks.batching import encode_prompt
    from tasks.common import PipelineError
    from tasks.data import OUT, load_split

    split, section = PROMPT_SPLITS[stage]
    if not (OUT / f"{split}.jsonl").exists() or not (MODELS / "sft").is_dir():
        return 0  # nothing to check yet: the stage's own input checks will say what is missing
    limit = config.load(section, params).max_prompt_len
    tok = AutoTokenizer.from_pretrained(MODELS / "sft")
    n = sum(len(encode_prompt(r["prompt"], tok)) > limit for r in load_split(split))
    if n and config.load("pipeline", params).prompt_overflow == "refuse":
        raise PipelineError(f"data/prepared/{split}.jsonl: {n} prompt(s) longer than {section}.max_prompt_len="
                            f"{limit} tokens (pipeline.prompt_overflow is 'refuse'; 'truncate' keeps their end)")
    if n:
        print(f"{stage}: {n} prompt(s) of the {split} split are longer than {limit} tokens; keeping their last "
              f"{limit} tokens (pipeline.prompt_overflow: truncate)")
    return n


def check_model_source(spec: str) -> None:
    """base.model, before anything downloads or loads: a local path must exist; a hub id must be in the
    local cache when HF_HUB_OFFLINE is set (nothing can be fetched then)."""
    import os

    from tasks.common import PipelineError

    if spec == "tiny" or spec.startswith("pypi:"):
        return
    path = Path(spec)
    if spec.endswith(".gguf") or spec.startswith((".", "/")) or path.exists():
        if not path.exists():
            raise PipelineError(f"base.model: {spec} not found")
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
            raise PipelineError(f"base.model: cannot load {spec} (hub id not in the local cache and HF_HUB_OFFLINE "
                                f"is set: download it first or point base.model at a local copy)")


def no_retry_on_user_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient failures, never a PipelineError (a bad input stays bad)."""
    from tasks.common import PipelineError

    try:
        state.result()
    except PipelineError:
        return False
    except Exception:
        return True
    return True


def write_metrics(stage: str, metrics: dict) -> None:
    """metrics/<stage>.json: the DVC metrics file (`dvc metrics show`)."""
    write_json(METRICS / f"{stage}.json", metrics)


def write_steps(stage: str, history: list[dict]) -> Path:
    """metrics/<stage>_steps.csv: the per-step curves `dvc plots show` draws."""
    path = METRICS / f"{stage}_steps.csv"
    keys = list(dict.fromkeys(k for row in history for k in row)) or ["step"]  # a skipped stage: header only
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    return path


def finish(stage: str, metrics: dict, history: list[dict] | None = None) -> None:
    """A stage's numbers: MLflow run metrics, metrics/<stage>.json and (if any) the per-step curves."""
    import mlflow

    from tasks.checkpoint import clear

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    if history:
        write_steps(stage, history)
    write_metrics(stage, metrics)
    clear(stage)  # outputs are complete: the resume point is no longer needed


def stage_params(params: dict, *sections: str) -> dict:
    return {s: params.get(s) for s in sections}


def log_step(step: int, row: dict) -> None:
    """Live per-step curves in MLflow (called from the training loop)."""
    from tasks import tracking

    tracking.log_history([row], prefix="train/")
