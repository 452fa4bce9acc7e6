"""`eval` stage: every trained policy vs the SFT model on held-out prompts (the `champion` stage gates on them).

Writes metrics/eval/<policy>.json (one row each in `dvc metrics show`; every number with its SE and
interval) and metrics/eval/head_to_head.json; plots/eval.png; an MLflow evaluation run with the picture and
one nested run per policy (params algorithm + kl_coef, metrics win_rate, win_rate_ci_low, kl, ...: the runs
table sorts by them) and the samples as an MLflow table; adds eval/* metrics to each policy's training run.
"""

from prefect import flow, task

from flows import tracking
from flows.common import read_params, run_stage, stage_run, write_metrics
from flows.eval_sft import cached_reference
from flows.judging import check_judges, judging
from flows.paths import MODELS, ROUND, STAGE_PLOTS, model_dir
from flows.rating import keep_scores, rate_rounds
from flows.stages import check_prompt_lengths, prompts, texts
from tasks import config
from tasks.eval.evaluate import evaluate_policies
from tasks.eval.report import agreement_table, eval_figure, eval_table, head_to_head_table
from tasks.runtime.device import run_context
from tasks.sections.stages import POLICY_STAGES

POLICIES = POLICY_STAGES


def trained() -> dict:
    """{name: model dir} of the policy stages that trained (not skipped) in this workspace."""
    dirs = {p: model_dir(p) for p in POLICIES}
    return {p: d for p, d in dirs.items() if d.is_dir() and not (d / "SKIPPED").exists()}


@task(name="evaluate-policies")
def evaluate(policy_dirs: dict) -> dict:
    params = read_params()
    ctx = run_context(config.load("compute", params), "eval")
    cfg = config.load("eval", params)
    reference = cached_reference(params)
    if reference is None:
        print("eval: no eval_sft reference for these inputs (run dvc repro eval_sft to cache it): SFT's side here")
    return evaluate_policies(
        policy_dirs, MODELS / "sft", cfg, judging(params), prompts(cfg.split), texts("pretrain"), ctx, reference
    )


@task(name="report")
def report(results: dict) -> None:
    """The tables printed, the picture drawn and logged to the eval run, the head-to-head as metrics."""
    import mlflow

    params = read_params()
    cfg, gate = config.load("eval", params), config.judge_name(config.gate_judge(params))
    metrics = {n: r["metrics"] for n, r in results["policies"].items()}
    print("evaluation:\n" + eval_table(metrics, cfg.ci_level, gate))
    if results["head_to_head"]:
        print("head to head:\n" + head_to_head_table(results["head_to_head"], cfg.ci_level))
    if results["judges"]:
        print("judges on the held-out comparisons:\n" + agreement_table(results["judges"], cfg.ci_level))
        mlflow.log_metrics({f"judges/{k}": float(v) for k, v in results["judges"].items()})
    eval_figure(metrics, STAGE_PLOTS / "eval.png", None, cfg.ci_level, gate)
    mlflow.log_artifact(str(STAGE_PLOTS / "eval.png"))
    for pair, m in results["head_to_head"].items():
        mlflow.log_metrics({f"{pair}/{k}": float(v) for k, v in m.items()})


@task(name="log-evaluations")
def log_evaluations(results: dict) -> None:
    """One nested MLflow run per policy (sortable by win_rate and kl_coef), its samples as a table, and the
    eval numbers on the policy's own training run."""
    import mlflow

    client = mlflow.MlflowClient()
    for name, r in results["policies"].items():
        info, m = tracking.run_info(name), r["metrics"]
        tags = {"policy": name, "stage": "eval", "round": str(ROUND)}  # a tracking server takes strings only
        with mlflow.start_run(run_name=f"eval-{name}", nested=True, tags=tags):
            mlflow.log_params(
                {
                    "policy": name,
                    "algorithm": info.get("algorithm", name),
                    "kl_coef": info.get("kl_coef", 0.0),
                    "model_version": info.get("version"),
                }
            )
            mlflow.log_metrics(m)
            columns = r["samples"][0].keys()
            table = {c: [row[c] for row in r["samples"]] for c in columns}
            mlflow.log_table(table, artifact_file=f"samples_{name}.json")
        if info.get("run_id") and known_run(client, info["run_id"]):
            for k, v in m.items():
                client.log_metric(info["run_id"], f"eval/{k}", float(v))
        elif info.get("run_id"):  # a model trained against another MLflow store (a clone that pulled it)
            print(f"eval: {name}'s training run {info['run_id']} is not in this MLflow store: eval/* not added to it")


def known_run(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


@flow(name="eval", log_prints=True)
def eval_flow() -> dict:
    policies = trained()
    with stage_run("eval", read_params()):
        results = evaluate(policies)
        report(results)
        log_evaluations(results)
        evaluated = results["policies"]
        for name in ("sft", *POLICIES):
            write_metrics(f"eval/{name}", evaluated[name]["metrics"] if name in evaluated else {"skipped": 1})
        write_metrics("eval/head_to_head", results["head_to_head"])
        write_metrics("eval/judges", results["judges"])
        keep_scores(results["per_prompt"])
        rate_rounds(read_params())
    return {n: r["metrics"] for n, r in evaluated.items()}


if __name__ == "__main__":
    run_stage(
        eval_flow,
        ("eval", "champion", "sample", "rm", "compute", "tracking", "pipeline"),
        check_prompt_lengths("eval"),
        check_judges,
    )
