"""`eval_sft` stage: SFT's side of every evaluation -> data/eval_sft/reference.json: its samples of the eval
prompts with each pointwise judge's scores (gold, the RMs, function scorers), its perplexity, and every judge's
agreement with the held-out labels (tasks/eval/evaluate.py: sft_reference). None of it depends on a policy, so
DVC restores it from its cache for every experiment, seed and frontier point that shares the SFT model and the
judges: only the policies' side is computed again."""

import hashlib
import json

from prefect import flow, task

from flows.common import read_params, run_stage, stage_run, write_metrics
from flows.judging import check_judges, judging
from flows.paths import EVAL_SFT, MODELS
from flows.stages import check_prompt_lengths, prompts, texts
from tasks import config
from tasks.eval.evaluate import reference_from_json, reference_to_json, sft_reference
from tasks.runtime.device import run_context
from tasks.runtime.files import atomic_path

REFERENCE = EVAL_SFT / "reference.json"
INPUTS = ("sft", "rm", "heldout_rm", "judge")  # the models the reference was computed with


def fingerprint(params: dict) -> str:
    """What the reference depends on besides code: the input models' bytes and the settings (eval, sample,
    rm, compute sections). eval compares it with the cached one before reusing it."""
    h = hashlib.sha256(json.dumps([config.resolved(s, params) for s in ("eval", "sample", "rm", "compute")]).encode())
    for name in INPUTS:
        for f in sorted(p for p in (MODELS / name).rglob("*") if p.is_file() and p.name != "mlflow_run.json"):
            h.update(str(f.relative_to(MODELS)).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    h.update(chunk)
    return h.hexdigest()


def cached_reference(params: dict) -> dict | None:
    """The eval_sft stage's reference when it was computed from these very inputs; None otherwise (stale, or
    the stage has not run: eval then computes SFT's side itself)."""
    if not REFERENCE.exists():
        return None
    data = json.loads(REFERENCE.read_text())
    return reference_from_json(data) if data.get("fingerprint") == fingerprint(params) else None


@task(name="sft-samples-and-judges")
def reference() -> dict:
    params = read_params()
    ctx, cfg = run_context(config.load("compute", params), "eval"), config.load("eval", params)
    return sft_reference(MODELS / "sft", cfg, judging(params), prompts(cfg.split), texts("pretrain"), ctx)


@flow(name="eval_sft", log_prints=True)
def eval_sft_flow() -> dict:
    with stage_run("eval_sft", read_params(), "eval"), atomic_path(EVAL_SFT) as staging:
        ref = reference()
        staging.mkdir()
        ref["fingerprint"] = fingerprint(read_params())
        (staging / REFERENCE.name).write_text(json.dumps(reference_to_json(ref)))
        n = len(ref["sampled"]["samples"])
        write_metrics("eval_sft", {"samples": n, "perplexity": ref["perplexity"]})
    print(f"eval_sft: {n} SFT samples scored by {', '.join(config.judges(read_params()))}")
    return ref["judges"]


if __name__ == "__main__":
    run_stage(
        eval_sft_flow,
        ("eval", "sample", "rm", "compute", "tracking"),
        check_prompt_lengths("eval"),
        check_judges,
    )
