"""The reward–KL frontier (DPO paper, Fig. 2): its points from DVC experiments, their CSV files and the plot.
flows/frontier.py runs the sweep of experiments and calls these.

A point is one (algorithm, coefficient): the mean over the seeds that ran it, with Student's t interval over
those seeds; a point with one seed carries its evaluation's own interval (bootstrap over prompts).
"""

from __future__ import annotations

import csv
from pathlib import Path

from tasks.eval import stats
from tasks.eval.dvc_experiments import param, revisions
from tasks.runtime.files import atomic_path
from tasks.sections.stages import POLICY_STAGES, STAGES

VALUES = ("kl", "gold_reward", "heldout_rm_score", "win_rate_gold", "win_rate")  # each where every seed has it
COLUMNS = ["experiments", "coef", "n_seeds"] + [f"{v}{s}" for v in VALUES for s in ("", "_ci_low", "_ci_high")]
REWARDS = {
    "gold_reward": "gold reward (the task's scorer)",
    "heldout_rm_score": "held-out RM score (a judge no policy saw)",
}


def points(exp_show: list, level: float = 0.95) -> dict[str, list[dict]]:
    """{algo: [point]} from `dvc exp show --json`: the workspace and the frontier-* experiments grouped by
    (algorithm, coefficient); skipped policies and failed experiments add none."""
    runs: dict[tuple, dict] = {}
    for rev, params, metrics in [*revisions(exp_show, None), *revisions(exp_show, "frontier-")]:
        for algo, m in metrics.items():
            coef = param(params, STAGES[algo].kl_knob) or param(params, "ppo.kl.coef")  # rto, rloo may inherit ppo's
            runs.setdefault((algo, coef, m["kl"]), {"experiment": rev, **m})  # listed twice: one run
    grouped: dict[tuple, list[dict]] = {}
    for (algo, coef, _), m in runs.items():
        grouped.setdefault((algo, coef), []).append(m)
    out: dict[str, list[dict]] = {a: [] for a in POLICY_STAGES}
    for (algo, coef), ms in grouped.items():
        row = {"experiments": " ".join(m["experiment"] for m in ms), "coef": coef, "n_seeds": len(ms)}
        for v in (v for v in VALUES if all(v in m for m in ms)):
            if len(ms) >= 2:
                iv = stats.t_interval([m[v] for m in ms], level)
                row |= {v: iv["mean"], f"{v}_ci_low": iv["lo"], f"{v}_ci_high": iv["hi"]}
            else:
                m = ms[0]
                row |= {v: m[v], f"{v}_ci_low": m.get(f"{v}_ci_low", m[v]), f"{v}_ci_high": m.get(f"{v}_ci_high", m[v])}
        out[algo].append(row)
    return {a: sorted(rows, key=lambda r: r["kl"]) for a, rows in out.items()}


def plot(pts: dict[str, list[dict]], sft: dict, png: Path, level: float = 0.95) -> None:
    """The frontier as a PNG, a panel per judge the policies never optimized (gold, the held-out RM): its mean
    score against KL with both intervals, one line per algorithm, points labeled by coefficient; sft: the SFT
    model's eval metrics (its scores as a dashed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_all = [r for rows in pts.values() for r in rows]
    panels = [v for v in REWARDS if rows_all and all(v in r for r in rows_all)] or ["gold_reward"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, value in zip(axes[0], panels):
        for i, (algo, rows) in enumerate(pts.items()):
            if not rows:
                continue
            xerr = [[r["kl"] - r["kl_ci_low"] for r in rows], [r["kl_ci_high"] - r["kl"] for r in rows]]
            yerr = [[r[value] - r[f"{value}_ci_low"] for r in rows], [r[f"{value}_ci_high"] - r[value] for r in rows]]
            seeds = max(r["n_seeds"] for r in rows)
            label = f"{algo} ({STAGES[algo].kl_knob}, ≤{seeds} seeds)"
            x, y = [r["kl"] for r in rows], [r[value] for r in rows]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o-", capsize=3, color=f"C{i}", label=label)
            for r in rows:
                ax.annotate(f"{r['coef']}", (r["kl"], r[value]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if sft.get(value) is not None:
            ax.axhline(sft[value], color="grey", ls="--", lw=1, label="SFT")
        ax.set_xlabel("KL(π ‖ π_SFT), nats per response (eval prompts)")
        ax.set_ylabel(f"mean {REWARDS.get(value, value)}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Reward–KL frontier (labels: the KL coefficient; bars: {level:.0%} intervals)")
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
