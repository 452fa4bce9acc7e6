"""`ppo` stage: PPO-ptx (PPO when ppo.ptx_coef = 0) of models/sft against models/rm -> models/ppo."""
from prefect import flow, task

from flows.common import MODELS, finish, run_stage, stage_params
from flows.tasks_common import evaluate, register
from tasks import config, tracking
from tasks.common import atomic_path, pick_device
from tasks.gold import load_scorer
from tasks.ppo import train_ppo


@task(name="ppo-train")
def train(out_dir: str) -> list[dict]:
    params = config.read_params()
    cfg, device_dtype = config.load("ppo", params), pick_device(config.load("compute", params))
    scorer = load_scorer(config.load("sample", params).gold_scorer)
    pol, history = train_ppo(cfg, MODELS / "sft", MODELS / "rm", *device_dtype, gold_scorer=scorer,
                             on_iter=lambda i, row: tracking.log_history([row], prefix="ppo/"))
    pol.model.save_pretrained(out_dir, safe_serialization=True)
    pol.tok.save_pretrained(out_dir)
    return history


@flow(name="ppo", log_prints=True)
def ppo_flow() -> dict:
    params = config.read_params()
    cfg, trk = config.load("ppo", params), config.load("tracking", params)
    algo = "ppo-ptx" if cfg.ptx_coef > 0 else "ppo"
    with tracking.stage_run("ppo", trk.experiment, stage_params(params, "ppo", "eval", "compute")):
        import mlflow

        mlflow.log_params({"kl_coef": cfg.kl.coef, "ptx_gamma": cfg.ptx_coef, "algorithm": algo})
        with atomic_path(MODELS / "ppo") as staging:
            history = train(str(staging))
            metrics = evaluate(str(staging))
            metrics.update(kl_target=cfg.kl.target, final_beta=history[-1]["beta"], iterations=len(history))
            register("ppo", str(staging), "lm", metrics, tags={"algorithm": algo, "beta": cfg.kl.coef,
                                                              "gamma": cfg.ptx_coef}, name="policy")
            finish("ppo", metrics, history)
    print(f"ppo: {metrics}")
    return metrics


if __name__ == "__main__":
    run_stage(ppo_flow, ("ppo", "sample", "eval", "compute", "tracking"))
