"""`judge` stage: the lm judge's model — eval.judge_model in any form base.model takes (a pypi: GGUF member
checked against eval.judge_sha256, a hub id, a local directory or .gguf file) — dequantized and saved as
safetensors to models/judge, where eval_sft and eval load it. Skipped unless lm is among eval.judges."""

from prefect import flow, task

from flows.common import read_params, run_stage, skip, write_metrics
from flows.paths import BASE_CACHE, MODELS
from tasks import config
from tasks.lm.base_model import check_model_source, ensure_pad_token, load_pretrained
from tasks.runtime.files import atomic_path

STAGE = "judge"
NAMES = ("eval.judge_model", "eval.judge_sha256")  # what its errors name


@task(name="fetch-convert-save")
def build(out_dir: str) -> dict:
    cfg = config.load("eval", read_params())
    model, tok = load_pretrained(cfg.judge_model, cfg.judge_sha256, False, BASE_CACHE, NAMES)
    ensure_pad_token(model, tok)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return {"params": sum(p.numel() for p in model.parameters()), "chat_template": int(bool(tok.chat_template))}


@flow(name=STAGE, log_prints=True)
def judge_flow() -> dict:
    if "lm" not in config.judges(read_params()):
        skip(STAGE, "lm is not among eval.judges")
        return {}
    with atomic_path(MODELS / STAGE) as staging:
        info = build(str(staging))
    write_metrics(STAGE, info)
    print(f"judge: {config.load('eval', read_params()).judge_model}: {info}")
    return info


def check_source(params: dict) -> None:
    """Before anything downloads or loads: the judge's local path exists, an offline hub id is cached."""
    if "lm" in config.judges(params):
        check_model_source(config.load("eval", params).judge_model, NAMES)


if __name__ == "__main__":
    run_stage(judge_flow, ("eval", "sample"), check_source)
