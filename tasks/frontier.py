"""The reward–KL frontier (DPO paper, Fig. 2): its points from DVC experiments, their CSV files and the plot.
flows/frontier.py runs the sweep of experiments and calls these.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tasks.common import atomic_path

ALGOS = {"ppo": "ppo.kl.coef", "dpo": "dpo.beta", "rto": "rto.kl.coef"}  # the KL-strength knob of each
COLUMNS = ["experiment", "coef", "kl", "gold_reward", "win_rate_gold"]


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
            row = {
                "experiment": node.get("name") or node.get("rev"),
                "coef": _get(params, key),
                "kl": m["kl"],
                "gold_reward": m["gold_reward"],
                "win_rate_gold": m["win_rate_gold"],
            }
            if (algo, row["coef"], row["kl"]) not in seen:
                seen.add((algo, row["coef"], row["kl"]))
                out[algo].append(row)
    return out


def plot(pts: dict[str, list[dict]], sft_gold: float | None, png: Path) -> None:
    """The frontier as a PNG: gold reward against KL, one line per algorithm, points labeled by coefficient."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for algo, rows in pts.items():
        rows = sorted(rows, key=lambda r: r["kl"])
        if rows:
            ax.plot([r["kl"] for r in rows], [r["gold_reward"] for r in rows], "o-", label=f"{algo} ({ALGOS[algo]})")
            for r in rows:
                ax.annotate(
                    f"{r['coef']}", (r["kl"], r["gold_reward"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    if sft_gold is not None:
        ax.axhline(sft_gold, color="grey", ls="--", lw=1, label="SFT")
    ax.set_xlabel("KL(π ‖ π_SFT), nats per response (eval prompts)")
    ax.set_ylabel("mean gold reward (VADER compound)")
    ax.set_title("Reward–KL frontier (labels: the KL coefficient)")
    ax.legend(fontsize=8)
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
            writer.writerows(sorted(rows, key=lambda r: r["kl"]))
