"""`prepare` stage: deterministic, disjoint splits of the corpus (or of user datasets) in data/prepared."""

from prefect import flow, task

from flows.common import no_retry_on_user_error, read_params, run_stage, write_metrics
from flows.paths import OWN_DATA, PREPARED, ROOT
from tasks import config
from tasks.data.splits import prepare, untracked_note


@task(
    name="split",
    retries=2,
    retry_delay_seconds=5,  # a hub dataset read may fail transiently;
    retry_condition_fn=no_retry_on_user_error,
)  # a bad record stays bad
def split() -> dict:
    return prepare(config.load("prepare", read_params()), ROOT, PREPARED)


@flow(name="prepare", log_prints=True)
def prepare_flow() -> dict:
    sizes = split()
    print(f"split sizes: {sizes}")
    write_metrics("prepare", {f"n_{k}": v for k, v in sizes.items()})
    return sizes


def check_splits(params: dict) -> None:
    """Build and check every split without writing: a bad source, record or overlap stops here."""
    cfg = config.load("prepare", params)
    prepare(cfg, ROOT, None)
    untracked_note("prepare", list(cfg.sources.model_dump().values()), ROOT, OWN_DATA)


if __name__ == "__main__":
    run_stage(prepare_flow, ("prepare",), check_splits)
