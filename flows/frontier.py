"""The reward–KL frontier (DPO paper, Fig. 2): a sweep of DVC experiments and the plot of its points.

    python -m flows.frontier sweep   # queue one experiment per value in params.yaml's `frontier` section, run
                                     # them with `dvc queue start -j <jobs>`, wait; experiment i sets
                                     # ppo.kl.coef, dpo.beta and rto.kl.coef to their i-th values, so each
                                     # experiment gives one point per algorithm (the eval stage's numbers)
    python -m flows.frontier plot    # every experiment + the workspace -> metrics/frontier/<algo>.csv
                                     # (`dvc plots show` draws them), plots/frontier.png, logged to MLflow

Only the policy stages and eval rerun in an experiment: DVC restores sft, sample and rm from its cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from flows.common import TRACKING_URI, mlflow_setup, read_params
from flows.paths import METRICS, PLOTS, ROOT
from tasks import config
from tasks.common import PipelineError, die_cleanly
from tasks.frontier import ALGOS, plot, points, write_points

PNG = PLOTS / "frontier.png"


def dvc_env() -> dict:
    # queued experiments run in temporary copies: keep them logging to this project's MLflow store
    return dict(os.environ, MLFLOW_TRACKING_URI=os.environ.get("MLFLOW_TRACKING_URI", TRACKING_URI))


def dvc(*args, timeout=600) -> str:
    proc = subprocess.run(["dvc", *args], cwd=ROOT, env=dvc_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout


def sweep(timeout_s: float = 6 * 3600) -> list[str]:
    cfg = config.load("frontier", read_params())
    stamp = time.strftime("%m%d-%H%M%S")
    names = []
    for i, values in enumerate(zip(cfg.ppo_kl_coef, cfg.dpo_beta, cfg.rto_kl_coef)):
        names.append(f"frontier-{stamp}-{i}")
        sets = [a for key, v in zip(ALGOS.values(), values) for a in ("-S", f"{key}={v}")]
        dvc("exp", "run", "--queue", "-n", names[-1], *sets)
    # `dvc queue start` daemonizes its workers, which inherit its stdout: never capture it (a captured pipe
    # stays open until the last worker exits, so the call would block for the whole sweep)
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(cfg.jobs)],
        cwd=ROOT,
        env=dvc_env(),
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout_s
    while True:  # `dvc queue status`: one line per task with its state
        rows = [line.split() for line in dvc("queue", "status").splitlines()[1:]]
        status = {r[1]: r[-1] for r in rows if len(r) >= 3 and r[1] in names}
        if len(status) == len(names) and all(s in ("Success", "Failed") for s in status.values()):
            break
        if time.time() > deadline:
            raise PipelineError(f"frontier sweep: not done after {timeout_s:.0f} s: {status}")
        time.sleep(5)
    failed = [n for n, s in status.items() if s == "Failed"]
    if failed:
        raise PipelineError(f"frontier sweep: experiments failed: {failed} (see `dvc queue logs <name>`)")
    print(f"frontier sweep: {len(names)} experiments done: {', '.join(names)}")
    return names


def collect_and_plot() -> dict:
    pts = points(json.loads(dvc("exp", "show", "--json")))
    write_points(pts, METRICS / "frontier")
    sft = METRICS / "eval" / "sft.json"
    PNG.parent.mkdir(exist_ok=True)
    plot(pts, json.loads(sft.read_text()).get("gold_reward") if sft.exists() else None, PNG)
    mlflow = mlflow_setup(read_params())
    with mlflow.start_run(run_name=f"frontier-{time.strftime('%Y%m%d-%H%M%S')}", tags={"stage": "frontier"}):
        mlflow.log_artifact(str(PNG))
        mlflow.log_metrics({f"{a}_points": len(r) for a, r in pts.items()})
    print("frontier: " + ", ".join(f"{a} {len(r)} points" for a, r in pts.items()) + f" -> {PNG.relative_to(ROOT)}")
    return pts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["sweep", "plot", "all"])
    command = ap.parse_args().command
    if command in ("sweep", "all"):
        sweep()
    if command in ("plot", "all"):
        collect_and_plot()


if __name__ == "__main__":
    die_cleanly(main)
