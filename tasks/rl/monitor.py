"""What an online stage logs of each iteration's rollouts beside the reward it optimizes: the judges it never
trained against — the gold scorer (where the task has one) and the held-out RM (where eval uses one). Side by
side with the proxy's score they draw Gao et al.'s over-optimization curve for this run: the proxy keeps rising
while the held-out judges flatten or fall."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from tasks.label.gold import scored_text
from tasks.lm.models import load_scalar_model
from tasks.rl.rollout import Rollout
from tasks.runtime.context import RunContext
from tasks.train.reward_model import load_reward_norm, normalized, sequence_rewards


class HeldoutJudges:
    """Called with a Rollout: {gold_score, heldout_rm_score} means over its responses (those there are)."""

    def __init__(self, gold: Callable | None, heldout_rm_dir: Path | None, ctx: RunContext):
        self.gold, self.ctx, self.rm = gold, ctx, None
        if heldout_rm_dir is not None and (Path(heldout_rm_dir) / "config.json").exists():
            self.rm = load_scalar_model(heldout_rm_dir, ctx.device)[0].eval().requires_grad_(False)
            self.norm = load_reward_norm(heldout_rm_dir)

    def __bool__(self) -> bool:
        return self.gold is not None or self.rm is not None

    @torch.no_grad()
    def __call__(self, roll: Rollout) -> dict[str, float]:
        row = {}
        if self.gold is not None:
            pairs = zip(roll.prompts, roll.responses)
            row["gold_score"] = sum(self.gold(scored_text(p, r["text"])) for p, r in pairs) / len(roll.responses)
        if self.rm is not None:
            with self.ctx.autocast():
                raw = sequence_rewards(self.rm, roll.packed, self.norm.get("pooling", "last")).float()
            row["heldout_rm_score"] = normalized(raw, self.norm).mean().item()
        return row
