"""`dpo` stage: DPO / cDPO / IPO of models/sft on data/comparisons (the RM's pairs) -> models/dpo."""
from prefect import flow, task

from flows.common import log_step, run_stage
from flows.tasks_common import policy_stage, skipped
from tasks import config, distributed


@task(name="dpo-train")
def train(out_dir: str) -> dict:
    return distributed.train("dpo", out_dir, log_step)


@flow(name="dpo", log_prints=True)
def dpo_flow() -> dict:
    if skipped("dpo"):
        return {}
    cfg = config.load("dpo")
    algo = "dpo" if cfg.loss_type == "sigmoid" and cfg.label_smoothing == 0 else (
        "cdpo" if cfg.loss_type == "sigmoid" else "ipo")
    return policy_stage("dpo", train, {"algorithm": "dpo", "loss_type": algo, "beta": cfg.beta},
                        {"dpo_beta": cfg.beta, "loss_type": cfg.loss_type, "algorithm": "dpo"})


if __name__ == "__main__":
    run_stage(dpo_flow, ("dpo", "sample", "compute", "tracking", "pipeline"))
