"""The reward–KL frontier (DPO paper, Fig. 2): its points from DVC experiments, their CSV files and the plot.
flows/frontier.py runs the sweep of experiments and calls these.

A point is one (algorithm, coefficient): the mean over the seeds that ran it, with Student's t interval over
those seeds; a point with one seed carries its evaluation's own interval (bootstrap over prompts). The runs
behind the points are kept in runs.csv, so a sweep survives the experiments it came from.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tasks.eval import stats
from tasks.eval.dvc_experiments import merge_records, param, revisions, setup_key, write_records
from tasks.runtime.files import atomic_path
from tasks.sections.stages import POLICY_STAGES, STAGES

VALUES = ("kl", "gold_reward", "heldout_rm_score", "win_rate_gold", "win_rate")  # each where every seed has it
INTERVALS = [f"{v}{s}" for v in VALUES for s in ("", "_ci_low", "_ci_high")]
COLUMNS = ["experiments", "coef", "n_seeds", *INTERVALS]
RUN_COLUMNS = ["experiment", "algo", "coef", "seed", "setup", *INTERVALS]
REWARDS = {
    "gold_reward": "gold reward (the task's scorer)",
    "heldout_rm_score": "held-out RM score (a judge no policy saw)",
}


def runs(exp_show: list) -> list[dict]:
    """One record per (experiment, algorithm) from `dvc exp show --json`: the workspace and the frontier-*
    experiments, with the coefficient, the seed and each value with its eval interval; skipped policies and
    failed experiments give none."""
    out: dict[tuple, dict] = {}
    for rev, params, metrics in [*revisions(exp_show, None), *revisions(exp_show, "frontier-")]:
        for algo, m in ((a, m) for a, m in metrics.items() if a in STAGES):  # a later round's policy: no point
            coef = param(params, STAGES[algo].kl_knob) or param(params, "ppo.kl.coef")  # rto, rloo may inherit ppo's
            seed = param(params, f"{algo}.seed")
            seed = param(params, "ppo.seed") if seed is None else seed  # rto, grpo, rloo may take ppo's
            record = {"experiment": rev, "algo": algo, "coef": coef, "seed": seed, "setup": setup_key(params)}
            for v in (v for v in VALUES if v in m):
                record |= {v: m[v], **{f"{v}{s}": m.get(f"{v}{s}", m[v]) for s in ("_ci_low", "_ci_high")}}
            out.setdefault((algo, coef, m["kl"]), record)  # listed twice (baseline and branch): one run
    return list(out.values())


def merge(recorded: list[dict], fresh: list[dict], setup: str) -> list[dict]:
    """The runs recorded by an earlier plot (runs.csv) under the same setup (setup_key: model, data, labels, SFT,
    RM, eval) with the ones DVC lists now: one run per (algorithm, coefficient, seed), DVC's over a recorded one
    and a newer experiment over an older. Keeps a sweep's points across checkouts, `dvc exp gc` and a sweep
    finished in another session, and never mixes in another task's."""

    def key(r):
        seed = "" if r.get("seed") is None else str(r["seed"])
        return r["algo"], float(r["coef"]), seed or r["experiment"]  # no seed known: every run its own

    return merge_records([r for r in recorded if r.get("setup") == setup], fresh, key)


def points(run_records: list[dict], level: float = 0.95) -> dict[str, list[dict]]:
    """{algo: [point]}: the runs grouped by (algorithm, coefficient), each value's mean over them with its
    t interval (one run: its own eval interval), sorted by KL."""
    grouped: dict[tuple, list[dict]] = {}
    for r in run_records:
        grouped.setdefault((r["algo"], float(r["coef"])), []).append(r)
    out: dict[str, list[dict]] = {a: [] for a in POLICY_STAGES}
    for (algo, coef), ms in grouped.items():
        row = {"experiments": " ".join(m["experiment"] for m in ms), "coef": coef, "n_seeds": len(ms)}
        for v in (v for v in VALUES if all(m.get(v) not in (None, "") for m in ms)):
            if len(ms) >= 2:
                iv = stats.t_interval([float(m[v]) for m in ms], level)
                row |= {v: iv["mean"], f"{v}_ci_low": iv["lo"], f"{v}_ci_high": iv["hi"]}
            else:
                row |= {k: float(ms[0][k]) for k in (v, f"{v}_ci_low", f"{v}_ci_high")}
        out.setdefault(algo, []).append(row)
    return {a: sorted(rows, key=lambda r: r["kl"]) for a, rows in out.items()}


def write_runs(run_records: list[dict], path: Path) -> None:
    """Every run behind the points, one row each, sorted by algorithm, coefficient and seed."""
    key = lambda r: (r["algo"], float(r["coef"]), str(r["seed"]), r["experiment"])  # noqa: E731
    write_records(run_records, path, RUN_COLUMNS, key)


def matched_kl(run_records: list[dict], value: str = "gold_reward", level: float = 0.95) -> dict:
    """The DPO paper's Fig. 2 question with an interval: for every two algorithms whose runs' KL ranges overlap,
    a line of `value` against KL per algorithm over all its runs (every coefficient and seed; ≥ 3 runs at ≥ 2
    KLs), both read at the middle of the overlap, and their difference there (stats.difference_of_fits).
    Pooling the coefficients is what gives an interval narrower than a point's over two seeds; it assumes the
    value is linear in KL over each algorithm's range. {"<a>_vs_<b>": {kl, kl_range, <a>, <b>, difference}}."""
    by_algo: dict[str, list[dict]] = {}
    for r in (r for r in run_records if r.get(value) not in (None, "")):
        by_algo.setdefault(r["algo"], []).append(r)
    kls = {a: [float(r["kl"]) for r in rows] for a, rows in by_algo.items()}
    kls = {a: k for a, k in kls.items() if len(k) >= 3 and len(set(k)) >= 2}
    out = {}
    for i, a in enumerate(algos := list(kls)):
        for b in algos[i + 1 :]:
            low, high = max(min(kls[a]), min(kls[b])), min(max(kls[a]), max(kls[b]))
            if low > high:
                continue  # no KL both reach: nothing to compare at matched KL
            at = (low + high) / 2
            fits = {x: stats.line_at(kls[x], [float(r[value]) for r in by_algo[x]], at, level) for x in (a, b)}
            difference = stats.difference_of_fits(fits[a], fits[b], level)
            out[f"{a}_vs_{b}"] = {"kl": at, "kl_range": [low, high], **fits, "difference": difference}
    return out


def plot(pts: dict[str, list[dict]], sft: dict, png: Path, level: float = 0.95, run_records=()) -> None:
    """The frontier as a PNG, a panel per judge the policies never optimized (gold, the held-out RM): per
    algorithm each point's mean score against KL with both intervals (labeled by coefficient), its runs as dots
    and the least-squares line through them (what matched_kl reads); sft: the SFT model's eval metrics (a dashed
    line). The axes frame the runs: an interval over two seeds (t with 1 degree of freedom) runs off the frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_all = [r for rows in pts.values() for r in rows]
    panels = [v for v in REWARDS if rows_all and all(v in r for r in rows_all)] or ["gold_reward"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, value in zip(axes[0], panels):
        xs, ys = [], [sft[value]] if sft.get(value) is not None else []
        for i, (algo, rows) in enumerate(pts.items()):
            if not rows:
                continue
            xerr = [[r["kl"] - r["kl_ci_low"] for r in rows], [r["kl_ci_high"] - r["kl"] for r in rows]]
            yerr = [[r[value] - r[f"{value}_ci_low"] for r in rows], [r[f"{value}_ci_high"] - r[value] for r in rows]]
            seeds = max(r["n_seeds"] for r in rows)
            label = f"{algo} ({STAGES[algo].kl_knob}, ≤{seeds} seeds)"
            x, y = [r["kl"] for r in rows], [r[value] for r in rows]
            bars = {"elinewidth": 0.8, "capsize": 2, "ecolor": matplotlib.colors.to_rgba(f"C{i}", 0.35)}
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=f"C{i}", label=label, **bars)
            for r in rows:
                ax.annotate(f"{r['coef']}", (r["kl"], r[value]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            own = [r for r in run_records if r["algo"] == algo and r.get(value) not in (None, "")]
            run_x, run_y = [float(r["kl"]) for r in own], [float(r[value]) for r in own]
            ax.scatter(run_x, run_y, s=12, color=f"C{i}", alpha=0.4)
            if len(own) >= 3 and len(set(run_x)) >= 2:
                ends = [min(run_x), max(run_x)]  # the line matched_kl reads, drawn over the runs' KL range
                line = [stats.line_at(run_x, run_y, end, level)["mean"] for end in ends]
                ax.plot(ends, line, ls="--", lw=1, color=f"C{i}")
            xs, ys = xs + x + run_x, ys + y + run_y
        if sft.get(value) is not None:
            ax.axhline(sft[value], color="grey", ls="--", lw=1, label="SFT")
        if xs:
            pad_x, pad_y = 0.15 * (max(xs) - min(xs) or 1), 0.15 * (max(ys) - min(ys) or 1)
            ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
            ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
        ax.set_xlabel("KL(π ‖ π_SFT), nats per response (eval prompts)")
        ax.set_ylabel(f"mean {REWARDS.get(value, value)}")
        ax.legend(fontsize=8)
    title = f"Reward–KL frontier (labels: the KL coefficient; bars: {level:.0%} intervals; dots: runs; dashed: a line"
    fig.suptitle(title + " per algorithm)", fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_points(pts: dict[str, list[dict]], out_dir: Path) -> None:
    """<out_dir>/<algo>.csv, sorted by KL: what `dvc plots show` draws."""
    for algo, rows in pts.items():
        with atomic_path(out_dir / f"{algo}.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
