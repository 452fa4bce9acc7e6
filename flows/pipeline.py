"""The whole pipeline as one Prefect flow: what a deployment runs when someone clicks "Run" in the UI.

It runs the DVC pipeline as a recorded DVC experiment (`dvc exp run -n <name> -S key=value ...`; with no
overrides and `as_experiment=False`, plain `dvc repro`), so every UI-triggered run is reproducible and
comparable with `dvc exp show`. One MLflow parent run per pipeline run: every stage's run is nested under
it (its id travels to the stage processes DVC starts in RLHF_PARENT_RUN_ID), and it is tagged with the git
commit, the DVC experiment name and this Prefect flow run's id; at the end it gets each policy's eval
numbers (`ppo/win_rate`, `dpo/kl`, ...) and the knobs (KL coefficient, β, γ) as params.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Literal

from prefect import flow, get_run_logger, task

from flows.common import mlflow_setup, read_params
from flows.paths import METRICS, ROOT
from tasks import config
from tasks.common import PipelineError, git_commit


@task(name="dvc-exp-run", retries=1, retry_delay_seconds=10)
def run_dvc(args: list[str], env: dict) -> str:
    """The DVC pipeline in a subprocess; its output streams to the flow's log."""
    log = get_run_logger()
    log.info("$ %s", " ".join(args))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith(("Running stage", "Stage", "ERROR", "error:", "Ran experiment")):
            log.info(line.rstrip())
    if proc.wait() != 0:
        raise PipelineError(f"{' '.join(args[:3])} failed: " + " | ".join(lines[-3:]))
    return "\n".join(lines)


@flow(name="rlhf-pipeline", log_prints=True)
def pipeline(
    algorithms: list[Literal["ppo", "dpo", "rto"]] | None = None,
    ppo_kl_coef: float | None = None,
    ptx_coef: float | None = None,
    dpo_beta: float | None = None,
    rto_kl_coef: float | None = None,
    overrides: list[str] | None = None,
    as_experiment: bool = True,
    name: str | None = None,
) -> dict:
    """algorithms: which policy stages train; ppo_kl_coef (β), ptx_coef (γ), dpo_beta, rto_kl_coef: the
    knobs people sweep; overrides: any other `section.key=value`; name: the DVC experiment name."""
    from prefect.runtime import flow_run

    sets = list(overrides or [])
    for key, value in (
        ("pipeline.algorithms", algorithms),
        ("ppo.kl.coef", ppo_kl_coef),
        ("ppo.ptx_coef", ptx_coef),
        ("dpo.beta", dpo_beta),
        ("rto.kl.coef", rto_kl_coef),
    ):
        if value is not None:
            sets.append(f"{key}={json.dumps(value) if isinstance(value, list) else value}")
    name = name or f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}"
    args = (
        ["dvc", "exp", "run", "-n", name] + [a for s in sets for a in ("-S", s)]
        if as_experiment or sets
        else ["dvc", "repro"]
    )
    mlflow = mlflow_setup(read_params())
    tags = {
        "git_commit": git_commit(ROOT),
        "dvc_experiment": name if args[1] == "exp" else "workspace",
        "prefect_flow_run_id": str(flow_run.id),
        "stage": "pipeline",
    }
    with mlflow.start_run(run_name=name, tags=tags, log_system_metrics=True) as run:
        mlflow.log_params({"overrides": " ".join(sets) or "(none)"})
        env = dict(os.environ, RLHF_PARENT_RUN_ID=run.info.run_id, RLHF_DVC_EXPERIMENT=tags["dvc_experiment"])
        try:
            run_dvc(args, env)
            run_dvc(["dvc", "checkout", "--relink"], env)  # outputs linked into DVC's cache, not copied
        except Exception as e:
            mlflow.set_tag("error", str(e)[:5000])
            mlflow.end_run(status="FAILED")
            raise
        params = read_params()  # as the run left it (`dvc exp run -S` writes its overrides there)
        ppo, dpo, rto = (config.load(s, params) for s in ("ppo", "dpo", "rto"))
        mlflow.log_params(
            {
                "kl_coef": ppo.kl.coef,
                "ptx_gamma": ppo.ptx_coef,
                "dpo_beta": dpo.beta,
                "rto_kl_coef": rto.kl.coef,
                "algorithms": ",".join(config.load("pipeline", params).algorithms),
            }
        )
        results = {}
        for policy in ("sft", "ppo", "dpo", "rto"):
            path = METRICS / "eval" / f"{policy}.json"
            m = json.loads(path.read_text()) if path.exists() else {}
            if "kl" in m:
                results[policy] = m
                metrics = {f"{policy}/{k}": float(v) for k, v in m.items()}
                short = {f"{policy}/{k.replace('_gold', '')}": float(v) for k, v in m.items() if "win_rate_gold" in k}
                mlflow.log_metrics(metrics | short)

    def interval(m: dict) -> str:
        return (
            f" [{m['win_rate_gold_ci_low']:.3f}, {m['win_rate_gold_ci_high']:.3f}]"
            if "win_rate_gold_ci_low" in m
            else ""
        )

    print(
        f"pipeline {name}: "
        + ", ".join(f"{p} win {m['win_rate_gold']:.3f}{interval(m)} kl {m['kl']:.2f}" for p, m in results.items())
    )
    return {"experiment": name, "mlflow_run_id": run.info.run_id, "results": results}


if __name__ == "__main__":
    from tasks.common import die_cleanly

    die_cleanly(pipeline)
