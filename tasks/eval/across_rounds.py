"""One rating across rounds (iterated RLHF): SFT and every policy of every round, Bradley–Terry on the Elo scale
(rating.py) fitted to their per-prompt comparisons by one judge, as Anthropic's iterated online RLHF puts every
round's policy into one Elo ranking. Every round's eval samples the same prompts with the same seed, and SFT's
samples are the cached eval_sft ones, so all rounds' scores are comparisons on one set of prompts."""

from __future__ import annotations

import numpy as np

from tasks.eval import stats
from tasks.eval.rating import rating
from tasks.runtime.errors import PipelineError


def combined(per_round: dict[int, dict]) -> tuple[str, dict[str, np.ndarray]]:
    """(judge, {"sft" | "<policy> r<round>": (n_prompts, k) scores}) from {round: eval's per_prompt record}; every
    round must have been judged by the same judge on the same number of prompts."""
    judges = {r: rec["judge"] for r, rec in per_round.items()}
    if len(set(judges.values())) != 1:
        raise PipelineError(f"rounds were judged by different judges ({judges}): rerun their eval stages")
    scores = {"sft": np.asarray(per_round[min(per_round)]["scores"]["sft"])}
    for r, rec in sorted(per_round.items()):
        scores |= {f"{name} r{r}": np.asarray(s) for name, s in rec["scores"].items() if name != "sft"}
    shapes = {name: s.shape for name, s in scores.items()}
    if len(set(shapes.values())) != 1:
        raise PipelineError(f"rounds were evaluated on different prompts ({shapes}): rerun their eval stages")
    return judges[min(judges)], scores


def rating_across(per_round: dict[int, dict], resamples: int, seed: int, level: float) -> dict:
    """{"judge", "ratings": {name: {elo, elo_se, elo_ci_low, elo_ci_high, round, algorithm}}}, SFT at 1000."""
    judge, scores = combined(per_round)
    n = len(scores["sft"])
    table = rating(scores, stats.bootstrap_indices(n, resamples, seed), level)
    for name, row in table.items():
        algorithm, _, r = name.partition(" r")
        row |= {"round": int(r) if r else 0, "algorithm": algorithm}
    return {"judge": judge, "ratings": table}


def rating_table(result: dict, level: float) -> str:
    rows = sorted(result["ratings"].items(), key=lambda kv: -kv[1]["elo"])
    lines = [f"{'':<12} {'round':>5} {'Elo':>7}  [{level:.0%} interval]  (judge: {result['judge']})"]
    for name, m in rows:
        lines.append(f"{name:<12} {m['round']:>5} {m['elo']:>7.1f}  [{m['elo_ci_low']:.1f}, {m['elo_ci_high']:.1f}]")
    return "\n".join(lines)


def rating_figure(result: dict, png) -> None:
    """Rating by round, one line per algorithm with its interval; SFT's 1000 as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ratings = result["ratings"]
    for algorithm in dict.fromkeys(m["algorithm"] for m in ratings.values() if m["round"]):
        rows = sorted((m for m in ratings.values() if m["algorithm"] == algorithm), key=lambda m: m["round"])
        x, y = [m["round"] for m in rows], np.array([m["elo"] for m in rows])
        err = np.array([[m["elo"] - m["elo_ci_low"] for m in rows], [m["elo_ci_high"] - m["elo"] for m in rows]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=algorithm)
    ax.axhline(ratings["sft"]["elo"], color="gray", linestyle="--", label="SFT")
    ax.set_xlabel("round")
    ax.set_ylabel(f"Elo (Bradley–Terry, {result['judge']})")
    ax.set_xticks(sorted({m["round"] for m in ratings.values() if m["round"]}))
    ax.set_title("One rating across rounds")
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
