"""The reward–KL frontier (DPO paper, Fig. 2): a sweep of DVC experiments and the plot of its points.

    python -m tasks.frontier sweep   # queue one experiment per value in params.yaml's `frontier` section, run
                                     # them with `dvc queue start -j <jobs>`, wait; experiment i sets
                                     # ppo.kl.coef, dpo.beta and rto.kl.coef to their i-th values, so each
                                     # experiment gives one point per algorithm (the eval stage's numbers)
    python -m tasks.frontier plot    # every experiment + the workspace -> metrics/frontier/<algo>.csv
                                     # (`dvc plots show` draws them), plots/frontier.png, logged to MLflow

Only the policy stages and eval rerun in an experiment: DVC restores sft, sample and rm from its cache.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import time

from tasks import config
from tasks.common import ROOT, PipelineError, atomic_path, die_cleanly

ALGOS = {"ppo": "ppo.kl.coef", "dpo": "dpo.beta", "rto": "rto.kl.coef"}  # the KL-strength knob of each
OUT = ROOT / "metrics" / "frontier"
PNG = ROOT / "plots" / "frontier.png"


def dvc(*args, timeout=600) -> str:
    env = dict(os.environ)
    # queued experiments run in temporary copies: keep them logging to this project's MLflow store
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    proc = subprocess.run(["dvc", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout


def sweep(timeout_s: float = 6 * 3600) -> list[str]:
    cfg = config.load("frontier")
    stamp = time.strftime("%m%d-%H%M%S")
    names = []
    for i, values in enumerate(zip(cfg.ppo_kl_coef, cfg.dpo_beta, cfg.rto_kl_coef)):
        names.append(f"frontier-{stamp}-{i}")
        sets = [a for key, v in zip(ALGOS.values(), values) for a in ("-S", f"{key}={v}")]
        dvc("exp", "run", "--queue", "-n", names[-1], *sets)
    # `dvc queue start` daemonizes its workers, which inherit its stdout: never capture it (a captured pipe
    # stays open until the last worker exits, so the call would block for the whole sweep)
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    subprocess.run(["dvc", "queue", "start", "-j", str(cfg.jobs)], cwd=ROOT, env=env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while True:  # `dvc queue status`: one line per task with its state
        status = {line.split()[1]: line.split()[-1] for line in dvc("queue", "status").splitlines()[1:]
                  if len(line.split()) >= 3 and line.split()[1] in names}
        states = [s for n, s in status.items()]
        if len(states) == len(names) and all(s in ("Success", "Failed") for s in states):
            break
        if time.time() > deadline:
            raise PipelineError(f"frontier sweep: not done after {timeout_s:.0f} s: {status}")
        time.sleep(5)
    failed = [n for n, s in status.items() if s == "Failed"]
    if failed:
        raise PipelineError(f"frontier sweep: experiments failed: {failed} (see `dvc queue logs <name>`)")
    print(f"frontier sweep: {len(names)} experiments done: {', '.join(names)}")
    return names


def _walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("data"), dict) and "metrics" in node["data"]:
            yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d if d != {} else None


def points(exp_show: list) -> dict[str, list[dict]]:
    """{algo: [{experiment, coef, kl, gold_reward, win_rate_gold}]} from `dvc exp show --json`: the workspace
    and the frontier-* experiments, one point per distinct (algorithm, coefficient, result); skipped
    policies and revisions without eval metrics add none."""
    out: dict[str, list[dict]] = {a: [] for a in ALGOS}
    seen = set()
    for node in _walk(exp_show):
        if node.get("rev") != "workspace" and not str(node.get("name") or "").startswith("frontier-"):
            continue  # other experiments (e.g. an ablation) are not points of this sweep
        if node.get("error"):
            continue  # a failed experiment: its metrics files are the baseline's, not its own
        data = node["data"]
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        for algo, key in ALGOS.items():
            m = ((data.get("metrics") or {}).get(f"metrics/eval/{algo}.json") or {}).get("data") or {}
            if "kl" not in m:
                continue
            row = {"experiment": node.get("name") or node.get("rev"), "coef": _get(params, key), "kl": m["kl"],
                   "gold_reward": m["gold_reward"], "win_rate_gold": m["win_rate_gold"]}
            if (algo, row["coef"], row["kl"]) not in seen:
                seen.add((algo, row["coef"], row["kl"]))
                out[algo].append(row)
    return out


def plot(pts: dict[str, list[dict]], sft_gold: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for algo, rows in pts.items():
        rows = sorted(rows, key=lambda r: r["kl"])
        if rows:
            ax.plot([r["kl"] for r in rows], [r["gold_reward"] for r in rows], "o-", label=f"{algo} ({ALGOS[algo]})")
            for r in rows:
                ax.annotate(f"{r['coef']}", (r["kl"], r["gold_reward"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    if sft_gold is not None:
        ax.axhline(sft_gold, color="grey", ls="--", lw=1, label="SFT")
    ax.set_xlabel("KL(π ‖ π_SFT), nats per response (eval prompts)")
    ax.set_ylabel("mean gold reward (VADER compound)")
    ax.set_title("Reward–KL frontier (labels: the KL coefficient)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    PNG.parent.mkdir(exist_ok=True)
    with atomic_path(PNG) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def collect_and_plot() -> dict:
    pts = points(json.loads(dvc("exp", "show", "--json")))
    for algo, rows in pts.items():
        with atomic_path(OUT / f"{algo}.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["experiment", "coef", "kl", "gold_reward", "win_rate_gold"])
            w.writeheader()
            w.writerows(sorted(rows, key=lambda r: r["kl"]))
    sft = ROOT / "metrics" / "eval" / "sft.json"
    plot(pts, json.loads(sft.read_text()).get("gold_reward") if sft.exists() else None)
    from tasks import tracking

    mlflow = tracking.setup(config.load("tracking").experiment)
    with mlflow.start_run(run_name=f"frontier-{time.strftime('%Y%m%d-%H%M%S')}", tags={"stage": "frontier"}):
        mlflow.log_artifact(str(PNG))
        mlflow.log_metrics({f"{a}_points": len(r) for a, r in pts.items()})
    print("frontier: " + ", ".join(f"{a} {len(r)} points" for a, r in pts.items()) + f" -> {PNG.relative_to(ROOT)}")
    return pts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["sweep", "plot", "all"])
    a = ap.parse_args()
    if a.command in ("sweep", "all"):
        sweep()
    if a.command in ("plot", "all"):
        collect_and_plot()


if __name__ == "__main__":
    die_cleanly(main)
