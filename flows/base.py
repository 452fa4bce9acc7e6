"""`base` stage: the pretrained (or tiny) model, as safetensors, in models/base."""
from prefect import flow, task

from flows.common import MODELS, run_stage, write_metrics
from tasks import config
from tasks.base_model import build_base
from tasks.common import ROOT, atomic_path


@task(name="fetch-convert-save")
def build(out_dir: str) -> dict:
    params = config.read_params()
    cfg, prep = config.load("base", params), config.load("prepare", params)
    return build_base(cfg, out_dir, ROOT / prep.corpus)


@flow(name="base", log_prints=True)
def base_flow() -> dict:
    with atomic_path(MODELS / "base") as staging:
        info = build(str(staging))
    print(f"base model: {info}")
    write_metrics("base", {"params": info["params"], "vocab": info["vocab"]})
    return info


if __name__ == "__main__":
    run_stage(base_flow, ("base", "prepare"))
