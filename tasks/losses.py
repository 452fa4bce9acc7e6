"""Every loss and estimator of the pipeline: pure functions of tensors, the paper's equation beside each.

Conventions: B = batch, T = sequence length, V = vocabulary. Masks are 1 for tokens that count.
Labels use -100 for positions that carry no loss (prompt tokens, padding), as in transformers.
"""
from __future__ import annotations

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


def reward_model_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, group: torch.Tensor,
                      margin: torch.Tensor | None = None, center_coef: float = 0.0) -> torch.Tensor:
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
