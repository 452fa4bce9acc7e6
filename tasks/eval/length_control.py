"""Length-controlled win rate (AlpacaEval 2, Dubois et al. 2024): judges and reward models favour longer answers,
so a policy can raise its win rate by writing more. A logistic GLM of the judge's preference on the length
difference separates the two; its prediction at equal lengths is the length-controlled (LC) win rate.

    logit P(policy ≻ SFT | pair) = θ + φ · tanh(Δlen / σ)          Δlen = len(policy) − len(SFT), in tokens
    LC = σ(θ)                                                       (the prediction at Δlen = 0)

σ is the standard deviation of Δlen over the evaluation's pairs; ties count ½ (a soft label). The fit maximizes the
likelihood with a small ridge on φ (a judge that sees only length separates the data perfectly; the ridge keeps φ
finite, and θ is what is left at Δlen = 0). Without the prompt-difficulty term of AlpacaEval (it needs many models
per prompt), the average over prompts of σ(θ) is σ(θ) itself. Uncertainty: the paired bootstrap over prompts of
tasks/eval/stats.py, refitting on every resample. Shapes: (n_prompts, m) outcomes and length differences, m pairs
per prompt (k policy samples × k SFT samples). A leaf (numpy only).
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-3  # on φ only: finite when length alone decides every pair; negligible otherwise


def pair_outcomes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, k_a), (n, k_b) scores -> (n, k_a k_b): 1 when a's sample beats b's, ½ on a tie, 0 below."""
    a, b = np.asarray(a, dtype=float)[:, :, None], np.asarray(b, dtype=float)[:, None, :]
    return ((a > b) + 0.5 * (a == b)).reshape(len(a), -1)


def pair_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, k_a), (n, k_b) lengths -> (n, k_a k_b): a's minus b's, in the order of pair_outcomes."""
    a, b = np.asarray(a, dtype=float)[:, :, None], np.asarray(b, dtype=float)[:, None, :]
    return (a - b).reshape(len(a), -1)


def fit(outcomes: np.ndarray, feature: np.ndarray, weights: np.ndarray | None = None, steps: int = 50):
    """(θ, φ) maximizing Σ_p w_p Σ_j [y log p + (1 − y) log(1 − p)] − ½ RIDGE φ², p = σ(θ + φ x), by Newton's
    method. outcomes, feature (n, m); weights (n,) how many times each prompt counts (a bootstrap resample)."""
    y, x = np.asarray(outcomes, dtype=float), np.asarray(feature, dtype=float)
    w = np.ones((len(y), 1)) if weights is None else np.asarray(weights, dtype=float)[:, None]
    w = np.broadcast_to(w, y.shape)
    beta = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(beta[0] + beta[1] * x)))
        r, v = w * (y - p), w * p * (1 - p)
        grad = np.array([r.sum(), (r * x).sum() - RIDGE * beta[1]])
        hess = np.array([[v.sum(), (v * x).sum()], [(v * x).sum(), (v * x * x).sum() + RIDGE]])
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def scale(len_diff: np.ndarray) -> float:
    """σ of the tanh: the standard deviation of the length differences (1 when they are all equal)."""
    sd = float(np.std(len_diff))
    return sd if sd > 0 else 1.0


def lc_win_rate(outcomes: np.ndarray, len_diff: np.ndarray, sigma: float | None = None) -> dict:
    """The LC win rate σ(θ) with the fitted coefficients (θ, φ) and σ."""
    sigma = scale(len_diff) if sigma is None else sigma
    theta, phi = fit(outcomes, np.tanh(np.asarray(len_diff, dtype=float) / sigma))
    return {"lc_win_rate": 1.0 / (1.0 + np.exp(-theta)), "theta": theta, "phi": phi, "sigma": sigma}


def lc_interval(outcomes: np.ndarray, len_diff: np.ndarray, indices: np.ndarray, level: float) -> dict:
    """The LC win rate with its paired-bootstrap SE and percentile interval (indices: stats.bootstrap_indices,
    shared with every other metric of the evaluation; σ fixed at the full data's)."""
    point = lc_win_rate(outcomes, len_diff)
    x = np.tanh(np.asarray(len_diff, dtype=float) / point["sigma"])
    n = len(outcomes)
    draws = []
    for row in indices:
        theta, _ = fit(outcomes, x, np.bincount(row, minlength=n))
        draws.append(1.0 / (1.0 + np.exp(-theta)))
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return {"mean": point["lc_win_rate"], "se": float(np.std(draws, ddof=1)), "lo": float(lo), "hi": float(hi)}
