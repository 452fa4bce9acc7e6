"""`eval` stage: every trained policy vs the SFT model on held-out prompts, then the champion gate.

Writes metrics/eval/<policy>.json (one row each in `dvc metrics show`), an MLflow evaluation run with one
nested run per policy (params algorithm + kl_coef, metrics win_rate, kl, gold_reward, ...: the runs table
sorts by them) and the samples as an MLflow table; adds eval/* metrics to each policy's training run; and
sets the registry alias (`champion`) on the best policy's model version if it passes the gate.
"""
import json

from prefect import flow, task

from flows.common import MODELS, run_stage, stage_params, write_metrics
from flows.tasks_common import RUN_FILE
from tasks import config, tracking
from tasks.common import pick_device

POLICIES = ("ppo", "dpo", "rto")


def trained() -> dict:
    """{name: model dir} of the policy stages that trained (not skipped) in this workspace."""
    return {p: MODELS / p for p in POLICIES if (MODELS / p).is_dir() and not (MODELS / p / "SKIPPED").exists()}


def run_info(name: str) -> dict:
    path = MODELS / name / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else {}


@task(name="evaluate-policies")
def evaluate(policy_dirs: dict) -> dict:
    from tasks.evaluate import evaluate_policies

    params = config.read_params()
    return evaluate_policies(policy_dirs, MODELS / "sft", MODELS / "rm", config.load("eval", params),
                             config.load("sample", params).gold_scorer, *pick_device(config.load("compute", params)))


@task(name="log-evaluations")
def log_evaluations(results: dict) -> None:
    """One nested MLflow run per policy (sortable by win_rate and kl_coef), its samples as a table, and the
    eval numbers on the policy's own training run."""
    import mlflow

    client = mlflow.MlflowClient()
    for name, r in results.items():
        info, m = run_info(name), r["metrics"]
        with mlflow.start_run(run_name=f"eval-{name}", nested=True, tags={"policy": name, "stage": "eval"}):
            mlflow.log_params({"policy": name, "algorithm": info.get("algorithm", name),
                               "kl_coef": info.get("kl_coef", info.get("dpo_beta", 0.0)),
                               "model_version": info.get("version")})
            mlflow.log_metrics({"win_rate": m["win_rate_gold"], **m})
            cols = r["samples"][0].keys()
            mlflow.log_table({c: [row[c] for row in r["samples"]] for c in cols}, artifact_file=f"samples_{name}.json")
        if info.get("run_id"):
            for k, v in m.items():
                client.log_metric(info["run_id"], f"eval/{k}", float(v))


@task(name="champion-gate")
def champion_gate(results: dict) -> dict:
    """Set the registry alias on the best policy's version if it passes; otherwise leave it and say so."""
    import mlflow

    from tasks.evaluate import choose_champion

    cfg = config.load("eval").champion
    best, why = choose_champion({n: r["metrics"] for n, r in results.items()}, cfg.max_kl, cfg.min_win_rate)
    decision = {"promoted": 0, "reason": why}
    info = run_info(best) if best else {}
    client = mlflow.MlflowClient()
    if best and not info.get("version"):
        decision["reason"] = f"{why}; but {best} has no registered version (tracking.register_models is off)"
    elif best:
        name, version = info["registered_model"], str(info["version"])
        client.set_registered_model_alias(name, cfg.alias, version)
        for k, v in results[best]["metrics"].items():
            client.set_model_version_tag(name, version, f"eval_{k}", f"{v:.6g}")
        client.set_model_version_tag(name, version, "champion_reason", why)
        decision.update(promoted=1, policy=best, model=f"models:/{name}@{cfg.alias}", version=int(version))
    if not decision["promoted"]:
        try:
            prev = client.get_model_version_by_alias(f"{config.load('tracking').registered_prefix}-policy", cfg.alias)
            decision["reason"] += f"; {cfg.alias} stays on version {prev.version}"
        except Exception:
            decision["reason"] += f"; no version has the {cfg.alias} alias"
    mlflow.set_tags({"champion": decision.get("policy", "none"), "champion_reason": decision["reason"]})
    print(f"champion gate: {'PROMOTED ' + decision['policy'] if decision['promoted'] else 'not promoted'}: "
          f"{decision['reason']}")
    return decision


@flow(name="eval", log_prints=True)
def eval_flow() -> dict:
    params = config.read_params()
    trk = config.load("tracking", params)
    policies = trained()
    with tracking.stage_run("eval", trk.experiment, stage_params(params, "eval", "compute")):
        results = evaluate(policies)
        log_evaluations(results)
        decision = champion_gate(results)
        for name in ("sft", *POLICIES):
            write_metrics(f"eval/{name}", results[name]["metrics"] if name in results else {"skipped": 1})
        write_metrics("champion", decision)
    return {"results": {n: r["metrics"] for n, r in results.items()}, "champion": decision}


if __name__ == "__main__":
    run_stage(eval_flow, ("eval", "sample", "compute", "tracking", "pipeline"))
