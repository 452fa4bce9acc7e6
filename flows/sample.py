"""`sample` stage: K completions per comparison prompt from models/sft, gold-scored and labeled."""
from prefect import flow, task

from flows.common import MODELS, finish, run_stage, stage_params
from tasks import config, tracking
from tasks.common import ROOT, atomic_path, pick_device
from tasks.sample import run_sample

OUT = ROOT / "data" / "comparisons"


@task(name="sample-score-label", retries=1, retry_delay_seconds=5)
def sample_and_label(out_dir: str) -> dict:
    cfg, device_dtype = config.load("sample"), pick_device(config.load("compute"))
    return run_sample(cfg, MODELS / "sft", out_dir, *device_dtype)


@flow(name="sample", log_prints=True)
def sample_flow() -> dict:
    params = config.read_params()
    trk = config.load("tracking", params)
    with tracking.stage_run("sample", trk.experiment, stage_params(params, "sample", "compute")):
        with atomic_path(OUT) as staging:
            metrics = sample_and_label(str(staging))
            finish("sample", metrics)
    print(f"sample: {metrics}")
    return metrics


if __name__ == "__main__":
    run_stage(sample_flow, ("sample", "compute", "tracking"))
