"""`ppo` stage: PPO-ptx (PPO when ppo.ptx_coef = 0) of models/sft against models/rm -> models/ppo."""
from prefect import flow, task

from flows.common import MODELS, run_stage
from flows.tasks_common import policy_stage, skipped
from tasks import config, tracking
from tasks.common import pick_device
from tasks.gold import load_scorer
from tasks.ppo import train_ppo


def save_policy(pol, history, cfg, out_dir) -> dict:
    pol.model.save_pretrained(out_dir, safe_serialization=True)
    pol.tok.save_pretrained(out_dir)
    return {"history": history, "metrics": {"kl_target": cfg.kl.target, "final_beta": history[-1]["beta"],
                                            "iterations": len(history)}}


@task(name="ppo-train")
def train(out_dir: str) -> dict:
    params = config.read_params()
    cfg, device_dtype = config.load("ppo", params), pick_device(config.load("compute", params))
    pol, history = train_ppo(cfg, MODELS / "sft", MODELS / "rm", *device_dtype,
                             gold_scorer=load_scorer(config.load("sample", params).gold_scorer),
                             on_iter=lambda i, row: tracking.log_history([row], prefix="ppo/"))
    return save_policy(pol, history, cfg, out_dir)


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
