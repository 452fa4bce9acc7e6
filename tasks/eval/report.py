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


SCORE_COLUMNS = {"gold_reward": "gold reward", "heldout_rm_score": "held-out RM", "rm_score": "RM score (proxy)"}


def eval_table(metrics: dict[str, dict], level: float, judge: str = "gold") -> str:
    """One row per policy: the gate judge's win rate vs SFT with its interval, its length-controlled value (LC),
    the response length difference to SFT (Δlen, tokens), wins/draws/losses; every other judge's win rate; each
    RM's / gold's mean score ± SE and KL ± SE."""
    first = next(iter(metrics.values()))
    listed = [
        k[len("win_rate_") : -len("_ci_low")] for k in first if k.startswith("win_rate_") and k.endswith("_ci_low")
    ]
    others = [j for j in listed if j and j != judge]  # "" is the headline win_rate_ci_low
    scores = [c for c in SCORE_COLUMNS if c in first]
    head = (
        f"{'policy':<6} {f'{judge} win rate vs SFT [{level:.0%} CI]':<30} {'LC':>6} {'Δlen':>5} {'W/D/L':<11}"
        + "".join(f" {j[:12]:>12}" for j in others)
        + "".join(f" {SCORE_COLUMNS[c] + ' ± SE':<18}" for c in scores)
        + f" {'KL ± SE (nats)':<15}"
        + (f" {'Elo [CI]':<17}" if "elo" in first else "")
    )
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        wdl = f"{m['n_wins']}/{m['n_draws']}/{m['n_losses']}"
        lc = f"{m['lc_win_rate']:6.1%}" if "lc_win_rate" in m else f"{'—':>6}"
        lines.append(
            f"{name:<6} {_pct(m, 'win_rate'):<30} {lc} {m['length_diff']:+5.1f} {wdl:<11}"
            + "".join(f" {m[f'win_rate_{j}']:12.1%}" for j in others)
            + "".join(f" {_plus_minus(m, c, 7, 3):<18}" for c in scores)
            + f" {m['kl']:6.2f} ± {m['kl_se']:.2f}  "
            + (f" {m['elo']:4.0f} [{m['elo_ci_low']:4.0f}, {m['elo_ci_high']:4.0f}]" if "elo" in m else "")
        )
    n, k = first["n_prompts"], first["samples_per_prompt"]
    lines.append(f"({n} prompts x {k} samples; intervals: paired bootstrap over prompts)")
    if "elo" in first:
        lines.append("(Elo: Bradley–Terry over every pairing of the rows by the head-to-head judge, SFT at 1000)")
    return "\n".join(lines)


def head_to_head_table(h2h: dict[str, dict], level: float) -> str:
    """One row per pair of policies: the first's win rate over the second, the difference of their mean score."""
    first = next(iter(h2h.values()))
    win = next(k for k in first if k.startswith("win_rate_") and "_ci_" not in k and not k.endswith("_se"))
    diff = next(k for k in first if k.endswith("_diff"))
    lines = [f"{'pair':<12} {f'{win} [{level:.0%} CI]':<30} {diff} [CI]"]
    for pair, m in h2h.items():
        verdict = "significant" if m["significant"] else "no significant difference"
        lines.append(
            f"{pair:<12} {_pct(m, win):<30} {m[diff]:+.3f} "
            f"[{m[f'{diff}_ci_low']:+.3f}, {m[f'{diff}_ci_high']:+.3f}]  {verdict}"
        )
    return "\n".join(lines)


def agreement_table(agreement: dict, level: float) -> str:
    """One row per judge: its agreement with the held-out labels and with gold, each with its interval."""
    judges = [k.removeprefix("n_pairs_") for k in agreement if k.startswith("n_pairs_")]
    lines = [f"{'judge':<24} {f'agrees with the labels [{level:.0%} CI]':<34} {'with gold [CI]':<28} pairs"]
    for j in judges:
        gold = _pct(agreement, f"gold_agreement_{j}") if f"gold_agreement_{j}" in agreement else "—"
        lines.append(f"{j:<24} {_pct(agreement, f'label_agreement_{j}'):<34} {gold:<28} {agreement[f'n_pairs_{j}']}")
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


def eval_figure(metrics: dict[str, dict], png: Path, gate, level: float, judge: str = "gold") -> None:
    """Left: every judge's win rate vs SFT per policy with its interval (the gate judge's filled, the others
    hollow, side by side). Right: a judge's mean score (gold's, else the held-out RM's, else the RM's) vs KL, both
    with their intervals. gate: the champion section, drawn as its two bars (None: no bars)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(metrics)
    score = next((c for c in SCORE_COLUMNS if c in metrics[names[0]]), None)
    listed = [k.removeprefix("win_rate_").removesuffix("_ci_low") for k in metrics[names[0]] if k.endswith("_ci_low")]
    judges = [judge] + [j for j in dict.fromkeys(listed) if j != judge and f"win_rate_{j}_ci_low" in metrics[names[0]]]
    for i, name in enumerate(names):
        m = metrics[name]
        for j, who in enumerate(judges):
            w = f"win_rate_{who}"
            err = [[m[w] - m[f"{w}_ci_low"]], [m[f"{w}_ci_high"] - m[w]]]
            x = i + (j - (len(judges) - 1) / 2) * 0.8 / len(judges)
            face = f"C{j}" if who == judge else "white"
            label = who if i == 0 else None
            left.errorbar([x], [m[w]], yerr=err, fmt="o", capsize=3, color=f"C{j}", mfc=face, label=label)
        if score:
            xerr = [[m["kl"] - m["kl_ci_low"]], [m["kl_ci_high"] - m["kl"]]]
            yerr = [[m[score] - m[f"{score}_ci_low"]], [m[f"{score}_ci_high"] - m[score]]]
            right.errorbar([m["kl"]], [m[score]], xerr=xerr, yerr=yerr, fmt="o", capsize=3, color=f"C{i}", label=name)
    left.axhline(0.5, color="grey", lw=1, ls=":")
    if gate:
        left.axhline(gate.min_win_rate, color="C3", lw=1, ls="--", label=f"gate: lower end >= {gate.min_win_rate:.0%}")
    left.set_xticks(range(len(names)), names)
    left.set_ylabel(f"win rate vs SFT ({level:.0%} interval)")
    left.set_title(f"per judge; filled: the headline's ({judge})", fontsize=9)
    left.legend(fontsize=8)
    right.set_xlabel(f"KL(π ‖ π_SFT), nats ({level:.0%} interval)")
    right.set_ylabel(SCORE_COLUMNS.get(score, "no pointwise judge"))
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
        win = "win_rate" if "win_rate" in s else "win_rate_gold"  # experiments from before the headline win rate
        score = next(c for c in SCORE_COLUMNS if c in s)
        left.plot([i] * len(rows), [r[win] for r in rows], ".", color=f"C{i}", alpha=0.5)
        right.plot([r["kl"] for r in rows], [r[score] for r in rows], ".", color=f"C{i}", alpha=0.5)

        w, kl, g = s[win], s["kl"], s[score]
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
    left.set_ylabel(f"win rate vs SFT, the gate's judge (mean, {level:.0%} t-interval)")
    right.set_xlabel("KL(π ‖ π_SFT), nats")
    right.set_ylabel(SCORE_COLUMNS[next(c for c in SCORE_COLUMNS if c in next(iter(summary.values())))])
    right.legend(fontsize=8)
    fig.suptitle("Over seeds: dots are single seeds")
    _save(fig, png)
