"""Every loss and estimator of the pipeline: pure functions of tensors, the paper's equation beside each.

Conventions: B = batch, T = sequence length, V = vocabulary. Masks are 1 for tokens that count.
Labels use -100 for positions that carry no loss (prompt tokens, padding), as in transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(y_t | y_<t) of the given tokens.

    logits (B, T, V) predict tokens (B, T) (already shifted: logits[:, t] scores tokens[:, t]).
    Dividing by the sampling temperature makes these the log-probs of the distribution that was
    actually sampled from. Returns (B, T).
    """
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.clamp_min(0).unsqueeze(-1)).squeeze(-1)


def completion_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of completion tokens, and how many tokens it sums.

        L_SFT = - Σ_t m_t · log π(y_t | y_<t),   m_t = 1 for completion tokens (incl. EOS), 0 for prompt/pad

    logits (B, T, V) from the model on input_ids; labels (B, T) = input_ids with prompt and padding set to
    -100. The shift by one (position t predicts token t+1) happens here. Returns (sum, count) as 0-d
    tensors so callers can average per token across micro-batches exactly.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE
    nll = -token_logprobs(logits, labels) * mask
    return nll.sum(), mask.sum()


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token mean of completion_nll: the SFT objective (prompt tokens masked)."""
    total, count = completion_nll(logits, labels)
    return total / count.clamp_min(1)


def preference_probability(gold_a: torch.Tensor, gold_b: torch.Tensor, tau: float) -> torch.Tensor:
    """P(a ≻ b) of a simulated Bradley–Terry annotator with temperature τ.

    P(a ≻ b) = σ((g(a) − g(b)) / τ)          τ → 0: always the higher gold score (ties: 1/2)
    """
    diff = gold_a - gold_b
    if tau == 0:
        return 0.5 + 0.5 * torch.sign(diff)
    return torch.sigmoid(diff / tau)


def group_mean(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Mean over groups of the within-group mean: each group (a prompt) weighs the same.

    values (N,), group (N,) integer ids. Returns a 0-d tensor.
    """
    ids, inv = torch.unique(group, return_inverse=True)
    sums = torch.zeros(len(ids), dtype=values.dtype, device=values.device).index_add(0, inv, values)
    counts = torch.zeros(len(ids), dtype=values.dtype, device=values.device).index_add(0, inv, torch.ones_like(values))
    return (sums / counts).mean()


def reward_model_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    group: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Bradley–Terry loss of a scalar reward model, pairs of one prompt averaged together (InstructGPT).

        L = E_prompts [ E_(c,r) of prompt [ −log σ(r(x,y_c) − r(x,y_r) − m) ] ]  +  η · E[(r(x,y_c) + r(x,y_r))²]

    r_chosen, r_rejected (N,) rewards of N pairs; group (N,) prompt id of each pair; margin (N,) or None;
    center_coef η: the reward-centering term (Eisenstein et al. 2023) that keeps rewards near zero.
    """
    diff = r_chosen - r_rejected - (margin if margin is not None else 0.0)
    loss = group_mean(-F.logsigmoid(diff), group)
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


# ---------------------------------------------------------------- PPO (InstructGPT step 3)
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, all_sum=None) -> torch.Tensor:
    """(x − mean) / std over the unmasked entries of the whole batch (advantage whitening).

    all_sum(t) sums a tensor over data-parallel processes (None: one process), so N processes whiten
    over their global batch exactly as one process would.
    """
    all_sum = all_sum or (lambda t: t)
    n = all_sum(mask.sum()).clamp_min(1)
    mean = all_sum((x * mask).sum()) / n
    var = all_sum(((x - mean) ** 2 * mask).sum()) / n
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) on tokens sampled from π (Schulman, "Approximating KL").

        k1 = log π − log π_ref                      unbiased, can be negative per token
        k2 = ½ (log π − log π_ref)²                 biased, low variance
        k3 = (π_ref/π − 1) − log(π_ref/π)           unbiased, always ≥ 0
    logp, ref_logp (B, L). Returns (B, L).
    """
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"unknown KL estimator {kind!r}")


def token_rewards(
    kl: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, beta: float, extra: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token rewards r_t = −β·KL_t (+ extra_t), with the sequence score added at the last response token.

        r_t = −β KL_t + extra_t + [t = T] · score
    kl, mask, extra (B, L); score (B,). Padding positions get 0. (`extra` is RTO's token-wise DPO reward.)
    """
    r = -beta * kl * mask
    if extra is not None:
        r = r + extra * mask
    last = mask.sum(1).long().clamp_min(1) - 1
    return r.scatter_add(1, last[:, None], score[:, None].to(r.dtype)) * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens (Schulman et al. 2016).

        δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   V_{T+1} = 0,   returns R_t = A_t + V_t
    rewards, values, mask (B, L) with right padding. Returns (advantages, returns), both (B, L).
    """
    values = values * mask
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    L = rewards.shape[1]
    for t in reversed(range(L)):
        nxt = values[:, t + 1] if t + 1 < L else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * nxt - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def aggregate(x: torch.Tensor, mask: torch.Tensor, how: str = "token") -> torch.Tensor:
    """A per-token loss (B, L) to one number.

    token:    Σ_i Σ_t m_it x_it / Σ_i Σ_t m_it          every token weighs the same (PPO, DAPO)
    sequence: 1/B Σ_i (Σ_t m_it x_it / Σ_t m_it)        every response weighs the same (GRPO, eq. 3)
    """
    if how == "token":
        return masked_mean(x, mask)
    if how == "sequence":
        return masked_mean(x, mask, dim=1).mean()
    raise ValueError(f"unknown loss aggregation {how!r}")


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    aggregation: str = "token",
) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate objective (Schulman et al. 2017), as a loss to minimize.

        ρ_t = exp(log π_θ − log π_old),   L = E_t[ max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)) ]
    All (B, L); E_t per `aggregate`. Also returns clip fraction and approx-KL ½E[(log ρ)²] as floats.
    """
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    loss = aggregate(torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)), mask, aggregation)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1).abs() > clip).float(), mask).item()
        approx_kl = masked_mean(0.5 * log_ratio**2, mask).item()
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def grpo_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantage (Shao et al. 2024, DeepSeekMath §4.1.2), one per response.

        A_i = (r_i − mean(r_group)) / (std(r_group) + ε)      scale=True (std with Bessel's n−1, as TRL)
        A_i =  r_i − mean(r_group)                             scale=False: Dr. GRPO (Liu et al. 2025)
    scores (N,) with the K = group_size responses of a prompt adjacent (N = n_prompts × K). A group whose
    rewards are all equal gets 0 (never NaN). Returns (N,).
    """
    groups = scores.view(-1, group_size)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (groups.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): the baseline of a response is the
    mean reward of the other K − 1 responses to its prompt.

        A_i = r_i − 1/(K−1) Σ_{j≠i} r_j  =  K/(K−1) · (r_i − mean(r_group))
    scores (N,) with a prompt's K ≥ 2 responses adjacent. Returns (N,).
    """
    groups = scores.view(-1, group_size)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).reshape(-1)


# ---------------------------------------------------------------- advantage estimators, by name (verl's core_algos)
# estimate(rewards, values, mask, cfg) -> (advantages, returns), all (B, L): per-token rewards (the score at the last
# response token, minus β·KL_t when the KL is in the reward), the critic's values and targets (None without one);
# cfg: the stage's section, whose `advantage` names the estimator (a literal of its config too).
@dataclass(frozen=True)
class AdvantageEstimator:
    estimate: Callable
    critic: bool  # it needs a value model


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str, critic: bool = False):
    def register(fn: Callable) -> Callable:
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimator(fn, critic)
        return fn

    return register


@register_advantage("gae", critic=True)
def gae_advantages(rewards, values, mask, cfg):  # PPO
    return gae(rewards, values, mask, cfg.gamma, cfg.lam)


@register_advantage("grpo")
def grpo_token_advantages(rewards, values, mask, cfg):  # a response's advantage on every one of its tokens
    return grpo_advantages(rewards.sum(1), cfg.group_size, cfg.scale_rewards)[:, None] * mask, None


@register_advantage("rloo")
def rloo_token_advantages(rewards, values, mask, cfg):
    return rloo_advantages(rewards.sum(1), cfg.group_size)[:, None] * mask, None


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict]:
    """Clipped value loss (the PPO2 / "N implementation details" form).

    V_clip = V_old + clip(V − V_old, −ε, ε),   L = ½ E_t[ max((V − R)², (V_clip − R)²) ]
    """
    v_clip = old_values + (values - old_values).clamp(-clip, clip)
    loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clip - returns) ** 2), mask)
    with torch.no_grad():
        frac = masked_mean(((values - returns) ** 2 < (v_clip - returns) ** 2).float(), mask).item()
    return loss, {"vf_clipfrac": frac}


def adaptive_kl_update(beta: float, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al. (2019) adaptive KL controller.

        e = clip(KL / KL_target − 1, −0.2, 0.2),   β ← β · (1 + e · n_steps / horizon)
    kl: the observed mean sequence-level KL; n_steps: episodes since the last update.
    """
    err = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + err * n_steps / horizon)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(π(·|s_t)) per position (B, L)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ---------------------------------------------------------------- DPO family (Rafailov et al. 2023)
def dpo_loss(
    pi_chosen: torch.Tensor,
    pi_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
):
    """Direct preference losses on sequence log-probs (sums over completion tokens), all (B,).

        h = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_r|x) − log π_ref(y_r|x)]
        sigmoid (DPO):        L = −log σ(β h)
        conservative (cDPO):  L = −(1−ε) log σ(β h) − ε log σ(−β h)      (label_smoothing ε)
        ipo (Azar et al.):    L = (h̄ − 1/(2β))²,  h̄ from length-averaged log-probs (lengths: (B,) of chosen, rejected)
    Returns (mean loss, implicit rewards β(log π − log π_ref) of chosen and rejected, each (B,)).
    """
    if loss_type == "ipo":
        len_chosen, len_rejected = lengths
        h = ((pi_chosen - ref_chosen) / len_chosen) - ((pi_rejected - ref_rejected) / len_rejected)
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "sigmoid":
        h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r}")
    return losses.mean(), beta * (pi_chosen - ref_chosen).detach(), beta * (pi_rejected - ref_rejected).detach()


def rto_token_reward(
    logp_dpo: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor, beta1: float, clip: float
) -> torch.Tensor:
    """RTO's token-wise implicit reward (Zhong et al. 2024): the DPO policy's per-token log-ratio.

        r_t^DPO = clip(β₁ · (log π_dpo(y_t|x,y_<t) − log π_ref(y_t|x,y_<t)), −c, c)
    All (B, L); padding gets 0.
    """
    return (beta1 * (logp_dpo - logp_ref)).clamp(-clip, clip) * mask
