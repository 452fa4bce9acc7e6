"""What people read of an evaluation: the printed tables and the pictures (matplotlib, Agg) of win rates and
gold reward vs KL with their error bars, for one evaluation and for a set of seeds."""

from __future__ import annotations

from pathlib import Path

from tasks.runtime.files import atomic_path


def _pct(m: dict, name: str) -> str:
    return f"{m[name]:6.1%} [{m[f'{name}_ci_low']:.1%}, {m[f'{name}_ci_high']:.1%}]"


def _plus_minus(m: dict, name: str, width: int, digits: int) -> str:
    """'mean ± SE', or a dash where the metric was not measured (no RM trained)."""
    if name not in m:
        return f"{'—':>{width}}" + " " * (digits + 3 + 2)
    return f"{m[name]:{width}.{digits}f} ± {m[name + '_se']:.{digits}f}"


def eval_table(metrics: dict[str, dict], level: float) -> str:
    """One row per policy: win rate vs SFT with its interval, its length-controlled value (LC) and the response
    length difference to SFT (Δlen, tokens), wins/draws/losses, gold, RM and KL ± SE."""
    head = (
        f"{'policy':<6} {'gold win rate vs SFT [' + f'{level:.0%}' + ' CI]':<30} {'LC':>6} {'Δlen':>5} {'W/D/L':<11} "
        f"{'gold reward ± SE':<17} {'RM score ± SE':<16} {'KL ± SE (nats)':<15}"
    )
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        wdl = f"{m['n_wins']}/{m['n_draws']}/{m['n_losses']}"
        lc = f"{m['lc_win_rate_gold']:6.1%}" if "lc_win_rate_gold" in m else f"{'—':>6}"
        dlen = f"{m['length_diff']:+5.1f}" if "length_diff" in m else f"{'—':>5}"
        lines.append(
            f"{name:<6} {_pct(m, 'win_rate_gold'):<30} {lc} {dlen} {wdl:<11}"
            f" {m['gold_reward']:7.3f} ± {m['gold_reward_se']:.3f}"
            f"   {_plus_minus(m, 'rm_score', 7, 3)}  {m['kl']:6.2f} ± {m['kl_se']:.2f}"
        )
    n, k = next(iter(metrics.values()))["n_prompts"], next(iter(metrics.values()))["samples_per_prompt"]
    lines.append(f"({n} prompts x {k} samples; intervals: paired bootstrap over prompts)")
    return "\n".join(lines)


def head_to_head_table(h2h: dict[str, dict], level: float) -> str:
    """One row per pair of policies: the first's gold win rate over the second, the gold-reward difference."""
    lines = [f"{'pair':<12} {'gold win rate [' + f'{level:.0%}' + ' CI]':<30} gold reward difference [CI]"]
    for pair, m in h2h.items():
        verdict = "significant" if m["significant"] else "no significant difference"
        lines.append(
            f"{pair:<12} {_pct(m, 'win_rate_gold'):<30} {m['gold_reward_diff']:+.3f} "
            f"[{m['gold_reward_diff_ci_low']:+.3f}, {m['gold_reward_diff_ci_high']:+.3f}]  {verdict}"
        )
    return "\n".join(lines)


def _save(fig, png: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def eval_figure(metrics: dict[str, dict], png: Path, min_win_rate: float, max_kl: float, level: float) -> None:
    """Left: win rate vs SFT per policy with its interval and the gate's bar. Right: gold reward vs KL, both
    with their intervals, and the KL cap."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(metrics)
    for i, name in enumerate(names):
        m = metrics[name]
        err = [[m["win_rate_gold"] - m["win_rate_gold_ci_low"]], [m["win_rate_gold_ci_high"] - m["win_rate_gold"]]]
        left.errorbar([i], [m["win_rate_gold"]], yerr=err, fmt="o", capsize=4, color=f"C{i}")
        xerr = [[m["kl"] - m["kl_ci_low"]], [m["kl_ci_high"] - m["kl"]]]
        yerr = [[m["gold_reward"] - m["gold_reward_ci_low"]], [m["gold_reward_ci_high"] - m["gold_reward"]]]
        right.errorbar(
            [m["kl"]], [m["gold_reward"]], xerr=xerr, yerr=yerr, fmt="o", capsize=3, color=f"C{i}", label=name
        )
    left.axhline(0.5, color="grey", lw=1, ls=":")
    left.axhline(min_win_rate, color="C3", lw=1, ls="--", label=f"gate: lower end >= {min_win_rate:.0%}")
    left.set_xticks(range(len(names)), names)
    left.set_ylabel(f"gold win rate vs SFT ({level:.0%} interval)")
    left.legend(fontsize=8)
    right.axvline(max_kl, color="C3", lw=1, ls="--", label=f"gate: KL <= {max_kl}")
    right.set_xlabel(f"KL(π ‖ π_SFT), nats ({level:.0%} interval)")
    right.set_ylabel("gold reward")
    right.legend(fontsize=8)
    fig.suptitle("Held-out evaluation (paired bootstrap over prompts)")
    _save(fig, png)


def _half(iv: dict):
    """matplotlib's asymmetric error bar of an interval; none when it is undefined (one seed)."""
    return None if iv["lo"] is None else [[iv["mean"] - iv["lo"]], [iv["hi"] - iv["mean"]]]


def seeds_figure(summary: dict[str, dict], runs: dict[str, list[dict]], png: Path, level: float) -> None:
    """Win rate vs SFT and gold reward vs KL per algorithm over seeds: each seed a small dot, the mean with its
    t-interval over seeds a large marker with error bars."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (algo, rows) in enumerate(runs.items()):
        s = summary[algo]
        left.plot([i] * len(rows), [r["win_rate_gold"] for r in rows], ".", color=f"C{i}", alpha=0.5)
        right.plot([r["kl"] for r in rows], [r["gold_reward"] for r in rows], ".", color=f"C{i}", alpha=0.5)

        w, kl, g = s["win_rate_gold"], s["kl"], s["gold_reward"]
        left.errorbar([i], [w["mean"]], yerr=_half(w), fmt="o", ms=8, capsize=5, color=f"C{i}")
        right.errorbar(
            [kl["mean"]],
            [g["mean"]],
            xerr=_half(kl),
            yerr=_half(g),
            fmt="o",
            ms=8,
            capsize=4,
            color=f"C{i}",
            label=f"{algo} ({w['n']} seeds)",
        )
    left.axhline(0.5, color="grey", lw=1, ls=":")
    left.set_xticks(range(len(runs)), list(runs))
    left.set_ylabel(f"gold win rate vs SFT (mean, {level:.0%} t-interval)")
    right.set_xlabel("KL(π ‖ π_SFT), nats")
    right.set_ylabel("gold reward")
    right.legend(fontsize=8)
    fig.suptitle("Over seeds: dots are single seeds")
    _save(fig, png)
