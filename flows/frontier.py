"""The reward–KL frontier (DPO paper, Fig. 2): a sweep of DVC experiments and the plot of its points.

    python -m flows.frontier sweep   # queue one experiment per value in params.yaml's `frontier` section, run
                                     # them with `dvc queue start -j <jobs>`, wait; experiment i sets
                                     # each policy stage's KL strength to its i-th value, once per
                                     # seed in frontier.seeds, so each value gives one point per algorithm
                                     # (default_seeds: the default coefficients under the other seeds too)
    python -m flows.frontier plot    # every experiment + the workspace + the runs recorded earlier in
                                     # metrics/frontier/runs.csv -> metrics/frontier/<algo>.csv (`dvc plots
                                     # show` draws them), plots/frontier.png with error bars (t-interval over
                                     # seeds; one seed: the eval's bootstrap interval), logged to MLflow;
                                     # --forget: drop the recorded runs (a new task, model or data);
                                     # metrics/frontier/matched.json: every two algorithms compared at one KL

Only the policy stages and eval rerun in an experiment: DVC restores sft, sample and rm from its cache.
"""

from __future__ import annotations

import argparse
import json
import time

from flows.common import mlflow_setup, read_params
from flows.experiments import exp_show, run_batch, seed_settings
from flows.paths import METRICS, PLOTS, ROOT
from tasks import config
from tasks.eval.dvc_experiments import read_records, setup_key
from tasks.eval.frontier import REWARDS, matched_kl, merge, plot, points, runs, write_points, write_runs
from tasks.runtime.errors import die_cleanly
from tasks.runtime.files import write_json
from tasks.sections.stages import KL_KNOBS, POLICY_STAGES

PNG = PLOTS / "frontier.png"
RUNS = METRICS / "frontier" / "runs.csv"
MATCHED = METRICS / "frontier" / "matched.json"  # the algorithms compared at one KL (tasks/eval/frontier.matched_kl)


def experiments(cfg, params: dict, stamp: str) -> dict[str, dict]:
    """{name: {param: value}}: experiment i sets each policy stage's KL strength to its i-th value, once per
    seed; with default_seeds, the workspace's coefficients once per seed but the workspace's own."""
    out = {}
    for i, values in enumerate(zip(*(getattr(cfg, name) for name in KL_KNOBS))):
        for seed in cfg.seeds:
            seeds = seed_settings(list(POLICY_STAGES), seed, params)
            out[f"frontier-{stamp}-{i}-s{seed}"] = dict(zip(KL_KNOBS.values(), values)) | seeds
    workspace_seed = (params.get("ppo") or {}).get("seed", 0)
    for seed in (s for s in cfg.seeds if cfg.default_seeds and s != workspace_seed):
        out[f"frontier-{stamp}-default-s{seed}"] = seed_settings(list(POLICY_STAGES), seed, params)
    return out


def sweep() -> list[str]:
    params = read_params()
    cfg = config.load("frontier", params)
    return run_batch(experiments(cfg, params, time.strftime("%Y%m%d-%H%M%S")), cfg.jobs, "frontier sweep")


def collect_and_plot(forget: bool = False) -> dict:
    params = read_params()
    level, setup, recorded = config.load("seeds", params).level, setup_key(params), [] if forget else read_records(RUNS)
    run_records = merge(recorded, runs(exp_show()), setup)
    if other := sum(r.get("setup") != setup for r in recorded):
        print(f"frontier: {other} recorded runs of another setup (base, data, labels, sft, rm, eval params) left out")
    pts = points(run_records, level)
    write_points(pts, METRICS / "frontier")
    write_runs(run_records, RUNS)
    sft = METRICS / "eval" / "sft.json"
    PNG.parent.mkdir(exist_ok=True)
    plot(pts, json.loads(sft.read_text()) if sft.exists() else {}, PNG, level, run_records)
    matched = {v: matched_kl(run_records, v, level) for v in REWARDS}
    write_json(MATCHED, matched)
    mlflow = mlflow_setup(params)
    with mlflow.start_run(run_name=f"frontier-{time.strftime('%Y%m%d-%H%M%S')}", tags={"stage": "frontier"}):
        mlflow.log_artifact(str(PNG))
        mlflow.log_metrics({f"{a}_points": len(r) for a, r in pts.items()})
        for value, pairs in matched.items():
            for pair, m in pairs.items():
                mlflow.log_metrics({f"matched_{value}/{pair}_{k}": m["difference"][k] for k in ("diff", "lo", "hi")})
    print("frontier: " + ", ".join(f"{a} {len(r)} points" for a, r in pts.items()) + f" -> {PNG.relative_to(ROOT)}")
    for value, pairs in matched.items():
        for pair, m in pairs.items():
            a, b = pair.split("_vs_")
            d, verdict = m["difference"], "differ" if m["difference"]["significant"] else "no difference"
            fits = [f"{x} {m[x]['mean']:.3f} [{m[x]['lo']:.3f}, {m[x]['hi']:.3f}] ({m[x]['n']} runs)" for x in (a, b)]
            gap = f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            print(f"  {value} at matched KL {m['kl']:.2f}: {', '.join(fits)}; {pair} {gap}: {verdict}")
    return pts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="all", choices=["sweep", "plot", "all"])
    ap.add_argument("--forget", action="store_true", help="drop the runs recorded in metrics/frontier/runs.csv")
    args = ap.parse_args()
    if args.command in ("sweep", "all"):
        sweep()
    if args.command in ("plot", "all"):
        collect_and_plot(args.forget)


if __name__ == "__main__":
    die_cleanly(main)
