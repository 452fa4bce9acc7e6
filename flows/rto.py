"""`rto` stage: PPO with the dpo model's token-wise implicit reward added (RTO) -> models/rto."""
from prefect import flow, task

from flows.common import MODELS, run_stage
from flows.ppo import save_policy
from flows.tasks_common import policy_stage, skipped
from tasks import config, tracking
from tasks.common import pick_device
from tasks.gold import load_scorer
from tasks.rto import train_rto


@task(name="rto-train")
def train(out_dir: str) -> dict:
    params = config.read_params()
    cfg, device_dtype = config.load("rto", params), pick_device(config.load("compute", params))
    pol, history = train_rto(cfg, MODELS / "sft", MODELS / "rm", MODELS / "dpo", *device_dtype,
                             gold_scorer=load_scorer(config.load("sample", params).gold_scorer),
                             on_iter=lambda i, row: tracking.log_history([row], prefix="rto/"))
    out = save_policy(pol, history, cfg, out_dir)
    out["metrics"].update(token_reward_mean=sum(r["token_reward"] for r in history) / len(history),
                          token_reward_share=sum(r["token_reward_share"] for r in history) / len(history))
    return out


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
