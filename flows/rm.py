"""`rm` stage: the reward model (scalar head on models/sft) trained on data/comparisons -> models/rm."""
from prefect import flow, task

from flows.common import MODELS, finish, log_step, run_stage, stage_params
from flows.tasks_common import register
from tasks import config, distributed, tracking
from tasks.common import atomic_path


@task(name="train-and-normalize")
def train(out_dir: str) -> dict:
    return distributed.train("rm", out_dir, log_step)


@flow(name="rm", log_prints=True)
def rm_flow() -> dict:
    params = config.read_params()
    trk = config.load("tracking", params)
    with tracking.stage_run("rm", trk.experiment, stage_params(params, "rm", "compute")):
        with atomic_path(MODELS / "rm") as staging:
            out = train(str(staging))
            metrics = out["metrics"]
            register("rm", str(staging), "reward", metrics)
            finish("rm", metrics, out["history"])
    print(f"rm: {metrics}")
    return metrics


if __name__ == "__main__":
    run_stage(rm_flow, ("rm", "compute", "tracking"))
