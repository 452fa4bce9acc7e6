"""`base` stage: the pretrained (or tiny) model, as safetensors, in models/base."""

from prefect import flow, task

from flows.common import read_params, run_stage, write_metrics
from flows.paths import BASE_CACHE, MODELS, ROOT
from tasks import config
from tasks.lm.base_model import build_base, check_model_source
from tasks.runtime.errors import PipelineError
from tasks.runtime.files import atomic_path


@task(name="fetch-convert-save")
def build(out_dir: str) -> dict:
    params = read_params()
    cfg, prep = config.load("base", params), config.load("prepare", params)
    return build_base(cfg, out_dir, ROOT / prep.corpus, BASE_CACHE)


@flow(name="base", log_prints=True)
def base_flow() -> dict:
    with atomic_path(MODELS / "base") as staging:
        info = build(str(staging))
    print(f"base model: {info}")
    write_metrics("base", {"params": info["params"], "vocab": info["vocab"]})
    return info


def check_source(params: dict) -> None:
    """A local path must exist; an offline hub id must be cached (before anything downloads or loads); a
    chat template file must exist."""
    cfg = config.load("base", params)
    check_model_source(cfg.model)
    if cfg.chat_template and cfg.chat_template.endswith(".jinja") and not (ROOT / cfg.chat_template).is_file():
        raise PipelineError(f"params.yaml: base.chat_template: {cfg.chat_template} not found")


if __name__ == "__main__":
    run_stage(base_flow, ("base", "prepare"), check_source)
