"""`sample` stage: K completions per comparison prompt from models/sft, gold-scored and labeled."""
from prefect import flow, task

from flows.common import MODELS, finish, no_retry_on_user_error, run_stage, stage_params
from tasks import config, tracking
from tasks.common import ROOT, atomic_path, pick_device
from tasks.sample import run_sample

OUT = ROOT / "data" / "comparisons"


@task(name="sample-score-label", retries=1, retry_delay_seconds=5, retry_condition_fn=no_retry_on_user_error)
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


def check_inputs(params: dict) -> None:
    """Before any model loads: the labeler exists, its scorer imports, a preference file parses."""
    from tasks.gold import load_scorer
    from tasks.labelers import make_labeler

    cfg = config.load("sample", params)
    labeler = make_labeler(cfg)
    if labeler.needs_samples:
        load_scorer(cfg.gold_scorer)
    else:
        labeler.label()


if __name__ == "__main__":
    run_stage(sample_flow, ("sample", "compute", "tracking"), preflight=check_inputs)
