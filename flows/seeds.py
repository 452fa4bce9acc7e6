"""Seeds as an axis: the training stages under several seeds, as DVC experiments, and their aggregate.

python -m flows.seeds run [--n N]       # one experiment <batch>-s<seed> per seed (seeds.values, or 0..N-1
                                        # with --n), each setting <stage>.seed for every stage in
                                        # seeds.stages; the other stages come from DVC's cache (same data
                                        # and RM); `dvc queue start -j <seeds.jobs>`, wait
python -m flows.seeds report [--batch]  # the newest batch (or --batch) with the seeds recorded before in
                                        # metrics/seeds/runs.csv (a seed run in another session or checkout;
                                        # --forget: none) -> metrics/seeds.json (per algorithm: mean and
                                        # t-interval over seeds of win rate, gold reward, KL),
                                        # metrics/seeds/<algo>.csv (`dvc plots show`), plots/seeds.png,
                                        # an MLflow run
python -m flows.seeds all [--n N]       # both (make seeds N=3)
"""

from __future__ import annotations

import argparse
import json
import time

from flows.common import mlflow_setup, read_params
from flows.experiments import exp_show, run_batch, seed_settings
from flows.paths import METRICS, PLOTS, ROOT
from tasks import config
from tasks.eval.dvc_experiments import (
    aggregate,
    differences,
    latest_batch,
    merge_records,
    merge_seed_runs,
    read_records,
    round_gains,
    seed_champions,
    seed_runs,
    setup_key,
    write_runs,
)
from tasks.eval.report import seeds_figure
from tasks.runtime.errors import PipelineError, die_cleanly
from tasks.runtime.files import write_json

PNG = PLOTS / "seeds.png"
SUMMARY = METRICS / "seeds.json"
RECORD = METRICS / "seeds" / "runs.csv"


def seeds_config(params: dict, n: int | None):
    """The seeds section, with --n N meaning seeds 0..N-1 (validated like the section itself)."""
    raw = dict(params.get("seeds") or {})
    if n is not None:
        raw["values"] = list(range(n))
    return config.load("seeds", {**params, "seeds": raw})


def run(cfg) -> str:
    """Queue and run one experiment per seed; returns the batch name."""
    batch = f"seeds-{time.strftime('%Y%m%d-%H%M%S')}"
    params = read_params()
    experiments = {f"{batch}-s{seed}": seed_settings(cfg.stages, seed, params) for seed in cfg.values}
    run_batch(experiments, cfg.jobs, f"seeds {batch}")
    return batch


def recorded_champions() -> list[dict]:
    """The gate decisions per seed of the last report (metrics/seeds.json), to merge like the runs."""
    return json.loads(SUMMARY.read_text()).get("champion_by_seed", []) if SUMMARY.exists() else []


def report(cfg, batch: str | None, forget: bool = False) -> dict:
    shown = exp_show(all_commits=True)  # the batch's baseline may no longer be HEAD
    batch, recorded = batch or latest_batch(shown), [] if forget else read_records(RECORD)
    if batch is None and not recorded:
        raise PipelineError("no seeds experiments yet: run `python -m flows.seeds run` first")
    runs = merge_seed_runs(recorded, seed_runs(shown, batch) if batch else {}, setup := setup_key(read_params()))
    if other := sum(r.get("setup") != setup for r in recorded):
        print(f"seeds: {other} recorded runs of another setup (base, data, labels, sft, rm, eval params) left out")
    if not runs or max(len(r) for r in runs.values()) < 2:
        raise PipelineError(f"{batch or RECORD.name}: fewer than 2 seeds with eval metrics; nothing to aggregate")
    summary = aggregate(runs, cfg.level)
    write_runs(runs, METRICS / "seeds")
    fresh_champions = seed_champions(shown, batch) if batch else []
    experiments = {r["experiment"] for rows in runs.values() for r in rows}  # a recorded decision: its run kept
    earlier = [c for c in ([] if forget else recorded_champions()) if c["experiment"] in experiments]
    champions = merge_records(earlier, fresh_champions, lambda c: c["seed"])
    champions, batch = sorted(champions, key=lambda c: c["seed"]), batch or "recorded"
    firsts = {a: rows for a, rows in runs.items() if " r" not in a}  # algorithms compared within round 1
    diffs, gains = differences(firsts, cfg.level), round_gains(runs, cfg.level)
    write_json(
        SUMMARY,
        {
            "batch": batch,
            "experiments": sorted(experiments),  # recorded ones too
            "level": cfg.level,
            "algorithms": summary,
            "differences": diffs,
            "round_gains": gains,  # rounds.count > 1: each later round's policy minus its round-1 one (Welch)
            "champion_by_seed": champions,
        },
    )
    seeds_figure(summary, runs, PNG, cfg.level)
    mlflow = mlflow_setup(read_params())
    with mlflow.start_run(run_name=batch, tags={"stage": "seeds", "batch": batch}):
        mlflow.log_params({"seeds": [r["seed"] for r in next(iter(runs.values()))], "level": cfg.level})
        for algo, metrics in summary.items():
            for name, iv in metrics.items():
                mlflow.log_metrics(
                    {
                        f"{algo}/{name}_{k}": v
                        for k, v in iv.items()
                        if v is not None and k in ("mean", "lo", "hi", "se")
                    }
                )
        mlflow.log_artifact(str(PNG))
    print(f"seeds {batch} (mean [{cfg.level:.0%} t-interval] over seeds):")
    for algo, m in summary.items():
        cells = [
            f"{k} {iv['mean']:.3f}" + (f" [{iv['lo']:.3f}, {iv['hi']:.3f}]" if iv["lo"] is not None else "")
            for k, iv in m.items()
        ]
        print(f"  {algo} ({m['kl']['n']} seeds): " + ", ".join(cells))
    for pair, d in (diffs | gains).items():
        cells = [
            f"{k} {iv['diff']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]" + (" significant" if iv["significant"] else "")
            for k, iv in d.items()
        ]
        print(f"  {pair} (Welch): " + ", ".join(cells))
    for c in champions:
        print(
            f"  champion gate, seed {c['seed']}: "
            + (f"promoted {c['policy']}" if c["promoted"] else "kept")
            + f": {c['reason']}"
        )
    print(f"-> {SUMMARY.relative_to(ROOT)}, {PNG.relative_to(ROOT)}")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="all", choices=["run", "report", "all"])
    ap.add_argument("--n", type=int, default=None, help="seeds 0..N-1 instead of seeds.values")
    ap.add_argument("--batch", default=None, help="report this batch (seeds-<stamp>) instead of the newest")
    ap.add_argument("--forget", action="store_true", help="drop the seeds recorded in metrics/seeds/runs.csv")
    args = ap.parse_args()
    cfg = seeds_config(read_params(), args.n)
    batch = run(cfg) if args.command in ("run", "all") else args.batch
    if args.command in ("report", "all"):
        report(cfg, batch, args.forget)


if __name__ == "__main__":
    die_cleanly(main)
