"""`rto` stage: PPO with the dpo model's token-wise implicit reward added (RTO) -> models/rto."""
from prefect import flow, task

from flows.common import run_stage
from flows.tasks_common import policy_stage, skipped
from tasks import config, distributed, tracking


@task(name="rto-train")
def train(out_dir: str) -> dict:
    return distributed.train("rto", out_dir, lambda i, row: tracking.log_history([row], prefix="rto/"))


@flow(name="rto", log_prints=True)
def rto_flow() -> dict:
    if skipped("rto"):
        return {}
    cfg = config.load("rto")
    return policy_stage("rto", train, {"algorithm": "rto", "beta": cfg.kl.coef, "token_beta": cfg.token_beta},
                        {"kl_coef": cfg.kl.coef, "token_beta": cfg.token_beta, "token_clip": cfg.token_clip,
                         "algorithm": "rto"})


if __name__ == "__main__":
    run_stage(rto_flow, ("rto", "sample", "compute", "tracking", "pipeline"))
