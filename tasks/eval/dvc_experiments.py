"""Results of DVC experiments, read from `dvc exp show --json`: each revision's params and eval metrics, the
runs of a seeds batch and their aggregate over seeds (mean and Student's t interval per algorithm), and the
record of runs (a CSV in git) that keeps them once the experiments are gone."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from tasks.eval import stats
from tasks.runtime.files import atomic_path
from tasks.sections.stages import POLICY_STAGES

# each where every run has it: win_rate is the gate judge's; gold where the task has a scorer, the RMs where trained
AGGREGATED = ("win_rate", "win_rate_gold", "gold_reward", "win_rate_heldout_rm", "heldout_rm_score", "kl", "rm_score")
LATER_ROUND = re.compile(r"metrics/rounds/(\d+)/eval/(\w+)\.json")  # iterated RLHF: round r's evaluation


# the params that make two runs the same task (model, data, labels, SFT, RM, eval): runs recorded under others are
# not merged; the policy stages' own params (the swept knobs, the seeds) and compute are left out on purpose
SETUP_SECTIONS = ("base", "prepare", "sft", "sample", "labels", "rm", "eval")


def setup_key(params: dict) -> str:
    """A short fingerprint of params.yaml's SETUP_SECTIONS, and of the rounds section where there are later rounds
    (their comparisons, RM and policies: a round-2 run is another task's; with one round the section is unread)."""
    task = {k: params.get(k) for k in SETUP_SECTIONS}
    rounds = params.get("rounds") or {}
    if int(rounds.get("count", 1)) > 1:
        task["rounds"] = rounds
    return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:12]


def walk(node):
    """Every revision node (a dict whose data holds metrics) in `dvc exp show --json`'s nested output."""
    if isinstance(node, dict):
        if isinstance(node.get("data"), dict) and "metrics" in node["data"]:
            yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def param(params: dict, dotted: str):
    """params.yaml's value at a dotted key, or None."""
    for k in dotted.split("."):
        params = params.get(k, {}) if isinstance(params, dict) else {}
    return params if params != {} else None


def unfinished(exp_show: list) -> set[str]:
    """Names of the experiments DVC lists as queued, running or failed (their `executor.state`): what their
    metrics files hold is the baseline's or a half-run's, not a result."""
    out: set[str] = set()
    stack = [exp_show]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            state = (node.get("executor") or {}).get("state") if isinstance(node.get("executor"), dict) else None
            if state not in (None, "success") and node.get("name"):
                out.add(node["name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def revisions(exp_show: list, prefix: str | None):
    """(name, params, {algo: eval metrics}) of the workspace (prefix None) or of every experiment whose name
    starts with prefix; failed, queued and running experiments (their metrics files are the baseline's or a
    half-run's) and skipped policies are left out. A later round's policy is '<algo> r<round>'."""
    skip = unfinished(exp_show)
    for node in walk(exp_show):
        name = node.get("name") or node.get("rev")
        wanted = name == "workspace" if prefix is None else str(node.get("name") or "").startswith(prefix)
        if not wanted or node.get("error") or name in skip:
            continue
        data = node["data"]
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = {}
        for algo in POLICY_STAGES:
            m = ((data.get("metrics") or {}).get(f"metrics/eval/{algo}.json") or {}).get("data") or {}
            if "kl" in m:
                metrics[algo] = m
        for path, entry in (data.get("metrics") or {}).items():
            later, m = LATER_ROUND.fullmatch(path), (entry or {}).get("data") or {}
            if later and later[2] in POLICY_STAGES and "kl" in m:
                metrics[f"{later[2]} r{later[1]}"] = m
        yield name, params, metrics


def seed_runs(exp_show: list, batch: str) -> dict[str, list[dict]]:
    """{algo: [{experiment, seed, <eval metrics>}]} of the experiments named <batch>-s<seed>, one per seed."""
    out: dict[str, list[dict]] = {a: [] for a in POLICY_STAGES}
    seen = set()
    for name, params, metrics in revisions(exp_show, f"{batch}-s"):
        seed = int(name.rsplit("-s", 1)[1])
        if seed in seen:
            continue  # the same experiment listed twice (under its baseline and its branch): one result
        seen.add(seed)
        for algo, m in metrics.items():
            out.setdefault(algo, []).append({"experiment": name, "seed": seed, "setup": setup_key(params), **m})
    return {a: sorted(rows, key=lambda r: r["seed"]) for a, rows in out.items() if rows}


def seed_champions(exp_show: list, batch: str) -> list[dict]:
    """[{experiment, seed, promoted, policy, reason}] of the batch's experiments, by seed: what the champion
    gate decided in each (its metrics/champion.json), so a reader sees whether the seeds agree."""
    out, skip = {}, unfinished(exp_show)
    for node in walk(exp_show):
        name = str(node.get("name") or "")
        if not name.startswith(f"{batch}-s") or node.get("error") or name in skip:
            continue
        decision = ((node["data"].get("metrics") or {}).get("metrics/champion.json") or {}).get("data") or {}
        seed = int(name.rsplit("-s", 1)[1])
        if decision and seed not in out:
            out[seed] = {"experiment": name, "seed": seed, "promoted": int(decision.get("promoted", 0))}
            out[seed] |= {"policy": decision.get("policy"), "reason": decision.get("reason", "")}
    return [out[s] for s in sorted(out)]


def latest_batch(exp_show: list, prefix: str = "seeds-") -> str | None:
    """The newest batch (<prefix><YYYYmmdd-HHMMSS>) among the experiments named <batch>-s<seed>."""
    batches = {n.rsplit("-s", 1)[0] for n, _, _ in revisions(exp_show, prefix) if "-s" in n[len(prefix) :]}
    return max(batches) if batches else None


def aggregate(runs: dict[str, list[dict]], level: float) -> dict[str, dict]:
    """{algo: {metric: {mean, se, lo, hi, n}}}: each metric's mean over seeds with its t-interval."""
    return {
        algo: {k: stats.t_interval([r[k] for r in rows], level) for k in AGGREGATED if all(k in r for r in rows)}
        for algo, rows in runs.items()
    }


def welch_interval(a, b, level: float) -> dict | None:
    """Difference of two means over seeds, mean(a) − mean(b), with Welch's t interval:
    d ± t_{(1+level)/2, ν} · √(s_a²/n_a + s_b²/n_b), ν = (s_a²/n_a + s_b²/n_b)² / Σ (s²/n)²/(n − 1)
    (Welch–Satterthwaite). Treated as unpaired (conservative: the algorithms share data, RM and SFT samples,
    not a seed-by-seed pairing). None below 2 seeds each."""
    from scipy.stats import t

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = float(a.mean() - b.mean()), float(np.sqrt(va + vb))
    if se == 0:
        return {"diff": diff, "se": 0.0, "lo": diff, "hi": diff, "significant": diff != 0}
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(t.ppf((1 + level) / 2, dof)) * se
    lo, hi = diff - half, diff + half
    return {"diff": diff, "se": se, "lo": lo, "hi": hi, "significant": bool(lo > 0 or hi < 0)}


def differences(runs: dict[str, list[dict]], level: float) -> dict[str, dict]:
    """{"<a>_vs_<b>": {metric: welch_interval}} for every two algorithms with ≥ 2 seeds each."""
    algos = [a for a in runs if len(runs[a]) >= 2]
    return {
        f"{a}_vs_{b}": {
            k: welch_interval([r[k] for r in runs[a]], [r[k] for r in runs[b]], level)
            for k in AGGREGATED
            if all(k in r for r in runs[a] + runs[b])
        }
        for i, a in enumerate(algos)
        for b in algos[i + 1 :]
    }


def round_gains(runs: dict[str, list[dict]], level: float) -> dict[str, dict]:
    """{"<algo> r<r> - r1": {metric: welch_interval}}: what a later round changed, per algorithm, over seeds."""
    return {
        f"{name} - r1": {
            k: welch_interval([r[k] for r in rows], [r[k] for r in runs[algo]], level)
            for k in AGGREGATED
            if all(k in r for r in rows + runs[algo])
        }
        for name, rows in runs.items()
        if " r" in name and (algo := name.split(" r")[0]) in runs and len(rows) >= 2 and len(runs[algo]) >= 2
    }


def read_records(path: Path) -> list[dict]:
    """The rows of a run record (a CSV written by write_records; no file: none), values as CSV gives them."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_records(rows: list[dict], path: Path, columns: list[str], sort_key) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=sort_key))


def merge_records(recorded: list[dict], fresh: list[dict], key) -> list[dict]:
    """One row per key(row): a fresh one (DVC lists it now) over a recorded one, and among either the newer
    experiment (its name's stamp; the workspace last, as the newest)."""
    merged: dict = {}
    for source in (recorded, fresh):
        for r in sorted(source, key=lambda r: (r["experiment"] == "workspace", r["experiment"])):
            merged[key(r)] = r
    return list(merged.values())


SEED_RECORD = ["experiment", "algo", "seed", "setup", *AGGREGATED, "win_rate_ci_low", "win_rate_ci_high"]


def merge_seed_runs(recorded: list[dict], runs: dict[str, list[dict]], setup: str) -> dict[str, list[dict]]:
    """A seeds batch's runs with the ones recorded before (runs.csv) under the same setup (setup_key): one run
    per (algorithm, seed), the batch's over the record. So a seed run in another session or checkout counts."""
    fresh = [{"algo": algo, **r} for algo, rows in runs.items() for r in rows]
    typed = {"seed": int, "experiment": str, "algo": str, "setup": str}  # the rest are metrics
    old = [{k: typed.get(k, float)(v) for k, v in r.items() if v != ""} for r in recorded if r.get("setup") == setup]
    out: dict[str, list[dict]] = {}
    for r in merge_records(old, fresh, key=lambda r: (r["algo"], int(r["seed"]))):
        out.setdefault(r["algo"], []).append({k: v for k, v in r.items() if k != "algo"})
    return {a: sorted(rows, key=lambda r: r["seed"]) for a, rows in out.items()}


def write_runs(runs: dict[str, list[dict]], out_dir: Path) -> None:
    """<out_dir>/<algo>.csv: one row per seed (what `dvc plots show` draws; header only for an algorithm that
    did not train, so every file dvc.yaml names exists); <out_dir>/runs.csv: every run, later rounds' too (the
    record merge_seed_runs reads back)."""
    columns = ["experiment", "seed", *AGGREGATED, "win_rate_ci_low", "win_rate_ci_high"]
    rows = [{"algo": algo, **r} for algo, algo_rows in runs.items() for r in algo_rows]  # later rounds' too
    write_records(rows, out_dir / "runs.csv", SEED_RECORD, lambda r: (r["algo"], r["seed"]))
    for algo in POLICY_STAGES:
        rows = runs.get(algo, [])
        with atomic_path(out_dir / f"{algo}.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
