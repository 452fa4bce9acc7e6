"""`prepare` stage: deterministic, disjoint splits of the corpus (or of user datasets) in data/prepared."""
from prefect import flow, task

from flows.common import no_retry_on_user_error, run_stage, write_metrics
from tasks import config
from tasks.data import prepare


@task(name="split", retries=2, retry_delay_seconds=5,  # a hub dataset read may fail transiently;
      retry_condition_fn=no_retry_on_user_error)       # a bad record stays bad
def split() -> dict:
    return prepare(config.load("prepare"))


@flow(name="prepare", log_prints=True)
def prepare_flow() -> dict:
    sizes = split()
    print(f"split sizes: {sizes}")
    write_metrics("prepare", {f"n_{k}": v for k, v in sizes.items()})
    return sizes


if __name__ == "__main__":
    # preflight: build and check every split without writing, so a bad source, record or overlap stops here
    run_stage(prepare_flow, ("prepare",), preflight=lambda params: prepare(config.load("prepare", params), write=False))
