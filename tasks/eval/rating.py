"""One rating for every policy and SFT: Bradley–Terry strengths fitted to their head-to-head comparisons by one
judge, on the Elo scale, with paired-bootstrap intervals over prompts. A leaf module (numpy and stats).

Bradley & Terry (1952): P(a ≻ b) = π_a / (π_a + π_b). Fitted by Hunter's (2004, Ann. Statist. 32, eq. 3)
minorize–maximize iteration, which increases the likelihood at every step:

    π_a ← W_a / Σ_{b≠a} N_ab / (π_a + π_b),   W_a = Σ_b W_ab  (a's wins, draws counted ½),  N_ab = W_ab + W_ba

Elo scale (as Chatbot Arena reports Bradley–Terry): R_a = R_anchor + 400·log10(π_a / π_anchor), so that
P(a ≻ b) = 1 / (1 + 10^((R_b − R_a)/400)): 100 points ≈ a 64 % expected win rate.

A game is one prompt: w_ab,p = the share of a's samples that beat b's on prompt p (stats.pairwise_wins), so
W_ab = Σ_p w_ab,p and N_ab = the number of prompts. Every pair also gets `prior` pseudo-games drawn
(½ a win each way): a policy that wins every comparison still gets a finite rating, and with hundreds of prompts
the prior moves ratings by a fraction of a point. A bootstrap resample draws prompts with replacement and refits
(the same resamples as every other eval interval: differences stay paired).
"""

from __future__ import annotations

import numpy as np

from tasks.eval.stats import pairwise_wins

ELO_SCALE = 400.0  # points per factor of 10 in the odds
ANCHOR_ELO = 1000.0  # the anchor's (SFT's) rating


def bradley_terry(wins: np.ndarray, prior: float = 0.0, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """Log-strengths θ = log π of m players from wins (..., m, m) — wins[..., a, b] = a's wins over b (draws as
    ½ each way; the diagonal is ignored) — by the MM iteration above, with `prior` pseudo-draws per pair.
    Leading dimensions are independent fits (bootstrap resamples at once). Returns (..., m), mean θ = 0."""
    w = np.array(wins, dtype=float)
    m = w.shape[-1]
    off = 1.0 - np.eye(m)
    w = (w + prior / 2.0) * off
    games = w + np.swapaxes(w, -1, -2)
    won = w.sum(axis=-1)
    if np.any(won <= 0):
        raise ValueError("a player with no win or draw has no finite Bradley–Terry strength (set prior > 0)")
    pi = np.ones(w.shape[:-1])
    for _ in range(max_iter):
        denom = (games / (pi[..., :, None] + pi[..., None, :])).sum(axis=-1)
        new = won / denom
        new = new / np.exp(np.log(new).mean(axis=-1, keepdims=True))  # fix the scale: mean log-strength 0
        done = np.max(np.abs(np.log(new) - np.log(pi))) < tol
        pi = new
        if done:
            return np.log(pi)
    raise RuntimeError(f"Bradley–Terry did not converge in {max_iter} iterations")


def to_elo(theta: np.ndarray, anchor: int) -> np.ndarray:
    """Elo ratings from log-strengths (..., m): the anchor player at ANCHOR_ELO."""
    theta = np.asarray(theta, dtype=float)
    return ANCHOR_ELO + ELO_SCALE / np.log(10.0) * (theta - theta[..., anchor : anchor + 1])


def expected_win_rate(elo_a: float, elo_b: float) -> float:
    """P(a ≻ b) the Elo ratings imply: 1 / (1 + 10^((R_b − R_a)/400))."""
    return 1.0 / (1.0 + 10.0 ** ((elo_b - elo_a) / ELO_SCALE))


def per_prompt_wins(scores: dict[str, np.ndarray]) -> np.ndarray:
    """(m, m, n_prompts) w_ab,p from {name: (n_prompts, k) pointwise scores}: every sample of a against every
    sample of b on prompt p, ties ½ (stats.pairwise_wins); w_ab,p + w_ba,p = 1, the diagonal ½."""
    names = list(scores)
    n = len(next(iter(scores.values())))
    out = np.full((len(names), len(names), n), 0.5)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i < j:
                out[i, j] = pairwise_wins(scores[a], scores[b])
                out[j, i] = 1.0 - out[i, j]
    return out


def rating(
    scores: dict[str, np.ndarray], indices: np.ndarray, level: float, anchor: str = "sft", prior: float = 1.0
) -> dict:
    """{name: {elo, elo_se, elo_ci_low, elo_ci_high}} for every entry of scores ({name: (n_prompts, k)} of one
    pointwise judge, all on the same prompts), the anchor at ANCHOR_ELO; indices: (resamples, n_prompts)
    bootstrap draws (stats.bootstrap_indices), the interval their percentiles at `level`."""
    names = list(scores)
    if anchor not in names:
        raise ValueError(f"the anchor {anchor!r} is not among the rated: {names}")
    a = names.index(anchor)
    w = per_prompt_wins(scores)
    point = to_elo(bradley_terry(w.sum(axis=-1), prior), a)
    resampled = np.moveaxis(w[:, :, indices].sum(axis=-1), -1, 0)  # (resamples, m, m)
    boot = to_elo(bradley_terry(resampled, prior), a)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    se = boot.std(axis=0, ddof=1)
    return {
        name: {"elo": float(point[i]), "elo_se": float(se[i]), "elo_ci_low": float(lo[i]), "elo_ci_high": float(hi[i])}
        for i, name in enumerate(names)
    }
