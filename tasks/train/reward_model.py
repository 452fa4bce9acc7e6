"""The reward model: a scalar head on the SFT model, read at the last response token or averaged over them.

The same forward (`token_scalars`) gives PPO's value model its per-token values, since InstructGPT
initialises the critic from the reward model.
"""

from __future__ import annotations

import json
import statistics
from functools import partial
from pathlib import Path

import torch

from tasks.lm.batching import regroup
from tasks.lm.models import add_lora, load_scalar_model, merged, save_pretrained
from tasks.losses import reward_model_loss
from tasks.runtime.context import SINGLE_PROCESS, RunContext, to_device
from tasks.runtime.device import seed_everything
from tasks.runtime.result import TrainResult
from tasks.train.comparisons import ComparisonGroup, accuracies, build_groups, collate_groups, prompt_hits
from tasks.train.loop import fit

NORM_FILE = "reward_norm.json"


class TokenScorer(torch.nn.Module):
    """The scalar head applied at every position, as one module: (B, T) scores. Training wraps this (not the
    sequence classifier, whose own forward pools one position) so DDP/FSDP see the whole forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        backbone = getattr(base, base.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        head = base.score if hasattr(base, "score") else base.classifier
        return head(hidden).squeeze(-1).float()


def token_scalars(model, packed: dict) -> torch.Tensor:
    """The scalar head at every position (B, T) of a sequence classifier, a TokenScorer, or a wrapped one."""
    scorer = model if isinstance(getattr(model, "module", model), TokenScorer) else TokenScorer(model)
    return scorer(packed["input_ids"], packed["attention_mask"], packed["position_ids"])


def sequence_rewards(model, packed: dict, pooling: str = "last") -> torch.Tensor:
    """r(x, y) (B,): the head's output at the last response token (InstructGPT), or with pooling="mean"
    its mean over the response tokens (the head then scores every token and the reward is their average:
    a better prior when the preference is a sum of local evidence, like sentiment)."""
    s = token_scalars(model, packed)
    if pooling == "mean":
        P, L = packed["P"], packed["response"].shape[1]
        m = packed["response_mask"]
        return (s[:, P : P + L] * m).sum(1) / m.sum(1).clamp_min(1)
    last = packed["P"] + packed["response_mask"].sum(1).long() - 1
    return s.gather(1, last[:, None]).squeeze(1)


def rm_loss(model, batch, center_coef: float, pooling: str = "last"):
    r = sequence_rewards(model, batch, pooling)
    rc, rr = r[batch["chosen"]], r[batch["rejected"]]
    loss = reward_model_loss(rc, rr, batch["group"], batch["margin"], center_coef)
    return loss, {"accuracy": (rc > rr).float().mean().item(), "reward_mean": r.mean().item()}


@torch.no_grad()
def score_groups(
    model, groups: list[ComparisonGroup], pad_id: int, batch_size: int, ctx: RunContext, pooling: str = "last"
) -> list[list[float]]:
    """Rewards of every completion of every group, in group order."""
    model.eval()
    flat = []
    for i in range(0, len(groups), batch_size):
        batch = to_device(collate_groups(groups[i : i + batch_size], pad_id), ctx.device)
        with ctx.autocast():
            flat += sequence_rewards(model, batch, pooling).cpu().tolist()
    return regroup(flat, [len(g.responses) for g in groups])


def freeze_bottom(model, n_layers: int) -> None:
    """Freeze the embeddings and the bottom n_layers transformer blocks: only the top blocks and the head
    learn. Backward then stops at the first trainable block (a step costs about fwd + 2 x top share), and
    a few hundred comparisons cannot overfit the whole network."""
    if n_layers <= 0:
        return
    backbone = getattr(model, model.base_model_prefix)
    backbone.get_input_embeddings().requires_grad_(False)
    for layer in backbone.layers[:n_layers]:
        layer.requires_grad_(False)


def train_rm(
    cfg,
    sft_dir: Path,
    pairs: list[dict],
    out_dir: Path,
    ctx: RunContext = SINGLE_PROCESS,
    on_step=None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train the RM on labeled pairs, fit its normalization, save to out_dir."""
    seed_everything(cfg.seed)
    model, tok = load_scalar_model(sft_dir, ctx.device)
    train, held = build_groups(pairs, tok, cfg, cfg.use_margin)
    freeze_bottom(model, cfg.freeze_layers)
    model = add_lora(model, cfg.lora, task_type="SEQ_CLS")
    loss_fn = partial(rm_loss, center_coef=cfg.center_coef, pooling=cfg.pooling)
    history = fit(
        TokenScorer(model),
        train,
        partial(collate_groups, pad_id=tok.pad_token_id),
        loss_fn,
        cfg,
        ctx,
        stage="rm",
        hooks={"on_step": on_step, "checkpoint_dir": checkpoint_dir},
    )
    model = merged(model)
    # The train accuracy (the overfitting check) on as many training prompts as are held out, not on all
    # of them (128 prompts x 6 completions at the defaults: 4x the forward passes for the same check).
    train_probe = train[: len(held)] if held else train
    r_train = score_groups(model, train_probe, tok.pad_token_id, cfg.eval_batch_size, ctx, cfg.pooling)
    r_held = score_groups(model, held, tok.pad_token_id, cfg.eval_batch_size, ctx, cfg.pooling)
    # Normalization: rewards of the SFT policy's own completions get mean 0 and std 1 (PPO uses r_norm).
    # Fit on the held-out prompts' completions: the RM was trained to spread its training completions
    # apart, so their rewards overstate the spread PPO's fresh samples will see.
    flat = [x for r in (r_held or r_train) for x in r]
    mu, sd = statistics.fmean(flat), statistics.pstdev(flat) or 1.0
    norm = {"gain": 1.0 / sd, "bias": -mu / sd, "raw_mean": mu, "raw_std": sd, "pooling": cfg.pooling}
    save_pretrained(model, tok, out_dir, ctx)
    if ctx.is_main:
        (Path(out_dir) / NORM_FILE).write_text(json.dumps(norm, indent=2))
    metrics = {f"train_{k}": v for k, v in accuracies(train_probe, r_train).items()}
    metrics.update({f"heldout_{k}": v for k, v in accuracies(held, r_held).items()})
    metrics.update(norm_gain=norm["gain"], norm_bias=norm["bias"], steps=len(history))
    return TrainResult(str(out_dir), history, metrics)


def normalized(raw: torch.Tensor, norm: dict) -> torch.Tensor:
    """The RM's score as policies and eval see it: gain · raw + bias (fitted above: SFT's samples get mean 0, std 1)."""
    return raw * norm["gain"] + norm["bias"]


def load_reward_norm(rm_dir: Path) -> dict:
    return json.loads((Path(rm_dir) / NORM_FILE).read_text())


def heldout_accuracy(rm_dir: Path, pairs: list[dict], cfg, ctx: RunContext = SINGLE_PROCESS) -> dict:
    """A trained RM on the held-out prompts of `pairs` (the same hash split as training): {accuracy, gold_accuracy,
    n_pairs, per_prompt: prompt_hits}. Iterated RLHF reports every round's RM on every round's held-out pairs, and
    the previous round's RM on the new round's (the distribution shift a new RM is meant to fix)."""
    model, tok = load_scalar_model(rm_dir, ctx.device)
    _, held = build_groups(pairs, tok, cfg, cfg.use_margin)
    rewards = score_groups(model, held, tok.pad_token_id, cfg.eval_batch_size, ctx, cfg.pooling)
    return {**accuracies(held, rewards), "per_prompt": prompt_hits(held, rewards)}
