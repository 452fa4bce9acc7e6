"""`ppo` stage: PPO-ptx (PPO when ppo.ptx_coef = 0) of models/sft against models/rm -> models/ppo."""
from prefect import flow, task

from flows.common import run_stage
from flows.tasks_common import policy_stage, skipped
from tasks import config, distributed, tracking


@task(name="ppo-train")
def train(out_dir: str) -> dict:
    return distributed.train("ppo", out_dir, lambda i, row: tracking.log_history([row], prefix="ppo/"))


@flow(name="ppo", log_prints=True)
def ppo_flow() -> dict:
    if skipped("ppo"):
        return {}
    cfg = config.load("ppo")
    algo = "ppo-ptx" if cfg.ptx_coef > 0 else "ppo"
    return policy_stage("ppo", train, {"algorithm": algo, "beta": cfg.kl.coef, "gamma": cfg.ptx_coef},
                        {"kl_coef": cfg.kl.coef, "ptx_gamma": cfg.ptx_coef, "algorithm": algo})


if __name__ == "__main__":
    run_stage(ppo_flow, ("ppo", "sample", "compute", "tracking", "pipeline"))
