"""Uncertainty of evaluation numbers: per-prompt statistics, the paired bootstrap over prompts, win/draw/loss
counts and the t-interval over seeds. A leaf module (numpy and scipy only); shapes are (n_prompts, k) for k
samples per prompt.

Every policy is scored on the same prompts as the SFT model, so a comparison is paired: a bootstrap
resample draws prompts (with replacement) and every policy's per-prompt value of those prompts at once
(Efron & Tibshirani 1993, ch. 6 and 13: standard error = std of the resampled means; the percentile
interval). Averaging the k samples of a prompt before resampling keeps the prompt the unit of resampling,
as the samples of one prompt are not independent of each other.
"""

from __future__ import annotations

import numpy as np


def by_prompt(values, prompt_index, n_prompts: int) -> np.ndarray:
    """(n_prompts, k) array of per-sample values grouped by prompt; every prompt must have the same k."""
    values, prompt_index = np.asarray(values, dtype=float), np.asarray(prompt_index)
    counts = np.bincount(prompt_index, minlength=n_prompts)
    if len(values) == 0 or counts.min() != counts.max():
        raise ValueError(f"every prompt needs the same number of samples (got {sorted(set(counts.tolist()))})")
    order = np.argsort(prompt_index, kind="stable")
    return values[order].reshape(n_prompts, counts[0])


def pairwise_wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-prompt win score of a over b, (n, k_a) and (n, k_b) -> (n,):
    w_p = 1/(k_a k_b) Σ_i Σ_j [1(a_pi > b_pj) + ½ 1(a_pi = b_pj)]  (every sample of a against every one of b;
    ties count ½). Exactly ½ for every prompt when a and b are the same samples."""
    a, b = np.asarray(a, dtype=float)[:, :, None], np.asarray(b, dtype=float)[:, None, :]
    return ((a > b) + 0.5 * (a == b)).mean(axis=(1, 2))


def outcome_counts(win_scores: np.ndarray) -> dict:
    """AlpacaEval's n_wins / n_draws / n_losses, per prompt: a prompt is a win when w_p > ½ (its policy
    samples beat the baseline's in more than half the pairs), a draw at exactly ½, a loss below."""
    w = np.asarray(win_scores)
    return {"n_wins": int((w > 0.5).sum()), "n_draws": int((w == 0.5).sum()), "n_losses": int((w < 0.5).sum())}


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) prompt indices drawn with replacement; one set shared by every metric and policy of an
    evaluation, so that differences between policies are paired resample by resample."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(per_prompt: np.ndarray, indices: np.ndarray, level: float) -> dict:
    """Mean of a per-prompt statistic (n,) with its bootstrap standard error and percentile interval:
    θ̂ = mean_p x_p;  θ*_b = mean_p x_{I_bp};  se = std_b(θ*_b);  [lo, hi] = quantiles (1∓level)/2 of θ*."""
    x = np.asarray(per_prompt, dtype=float)
    means = x[indices].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    # a constant statistic has resampled means equal up to rounding: its interval is the point itself
    if np.ptp(x) == 0:
        lo = hi = x[0]
    return {
        "mean": float(x.mean()),
        "se": float(means.std(ddof=1)) if np.ptp(x) else 0.0,
        "lo": float(lo),
        "hi": float(hi),
    }


def flat(name: str, iv: dict) -> dict:
    """{name, name_se, name_ci_low, name_ci_high} for metrics files and MLflow."""
    return {name: iv["mean"], f"{name}_se": iv["se"], f"{name}_ci_low": iv["lo"], f"{name}_ci_high": iv["hi"]}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals (lo, hi) share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def t_interval(values, level: float) -> dict:
    """Mean over seeds with Student's t interval: x̄ ± t_{(1+level)/2, n−1} · s/√n (s: sample std, ddof 1).
    With one value the interval is undefined: lo and hi are None."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return {"mean": float(x.mean()), "se": None, "lo": None, "hi": None, "n": n}
    se = float(x.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * se
    return {"mean": float(x.mean()), "se": se, "lo": float(x.mean() - half), "hi": float(x.mean() + half), "n": n}


def line_at(x, y, x0: float, level: float) -> dict:
    """Least squares y = a + b·x over runs, its mean at x0 with Student's t interval (the standard error of the
    fitted mean): ŷ0 = a + b·x0 ± t_{(1+level)/2, n−2} · s·√(1/n + (x0 − x̄)²/Sxx), s² = Σ(y − a − b·x)² / (n − 2),
    Sxx = Σ(x − x̄)². Needs n ≥ 3 and two distinct x."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n, x_bar, y_bar = len(x), x.mean(), y.mean()
    sxx = float(((x - x_bar) ** 2).sum())
    slope = float(((x - x_bar) * (y - y_bar)).sum() / sxx)
    intercept = y_bar - slope * x_bar
    s = float(np.sqrt(((y - intercept - slope * x) ** 2).sum() / (n - 2)))
    se = s * float(np.sqrt(1 / n + (x0 - x_bar) ** 2 / sxx))
    mean = float(intercept + slope * x0)
    half = float(stats.t.ppf((1 + level) / 2, n - 2)) * se
    return {
        "at": x0,
        "mean": mean,
        "se": se,
        "lo": mean - half,
        "hi": mean + half,
        "n": n,
        "dof": n - 2,
        "slope": slope,
    }


def difference_of_fits(a: dict, b: dict, level: float) -> dict:
    """a − b for two line_at results, Welch–Satterthwaite: d ± t_{(1+level)/2, ν} · √(se_a² + se_b²),
    ν = (se_a² + se_b²)² / (se_a⁴/ν_a + se_b⁴/ν_b)."""
    from scipy import stats

    var = a["se"] ** 2 + b["se"] ** 2
    diff = a["mean"] - b["mean"]
    if var == 0:
        return {"diff": diff, "se": 0.0, "lo": diff, "hi": diff, "significant": diff != 0}
    dof = var**2 / (a["se"] ** 4 / a["dof"] + b["se"] ** 4 / b["dof"])
    half = float(stats.t.ppf((1 + level) / 2, dof)) * float(np.sqrt(var))
    lo, hi = diff - half, diff + half
    return {
        "diff": diff,
        "se": float(np.sqrt(var)),
        "lo": lo,
        "hi": hi,
        "dof": dof,
        "significant": bool(lo > 0 or hi < 0),
    }


def share_difference(hits_a, hits_b, totals, indices: np.ndarray, level: float) -> dict:
    """Difference of two shares of the same items grouped by prompt (two reward models' accuracy on the same held-out
    pairs), paired bootstrap over prompts: Δ = Σ_p a_p / Σ_p n_p − Σ_p b_p / Σ_p n_p (a_p, b_p: items of prompt p each
    gets right, n_p: its items); Δ*_b the same over the prompts I_b; se = std_b(Δ*_b), [lo, hi] its percentiles.
    A prompt's pairs share completions, so the prompt, not the pair, is the unit resampled."""
    a, b, n = (np.asarray(v, dtype=float) for v in (hits_a, hits_b, totals))
    diff = float((a.sum() - b.sum()) / n.sum())
    resampled = (a[indices].sum(axis=1) - b[indices].sum(axis=1)) / n[indices].sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(resampled, [alpha, 1.0 - alpha])
    return {
        "diff": diff,
        "se": float(resampled.std(ddof=1)),
        "lo": float(lo),
        "hi": float(hi),
        "n_prompts": len(n),
        "significant": bool(lo > 0 or hi < 0),
    }
