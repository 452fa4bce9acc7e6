"""Pairwise judges of a policy's response against SFT's for the same prompt, beside the pointwise gold scorer and
RM: a local causal LM asked which of two responses is better, or any `module:function` — pairwise
f(prompt, a, b) -> P(a ≻ b), or pointwise f(text) -> score like a gold scorer.

Every pair is judged in both orders (MT-Bench, AlpacaEval: LM judges favour a position): the policy wins when it
is preferred as response A and as response B, loses when SFT is preferred both times, and orders that disagree
count as a tie (½). The position-consistency rate is the share of pairs where both orders name the same
winner.

The LM judge's prompt (JUDGE_PROMPT, through the model's chat template when it has one) ends where the answer
starts; P(A ≻ B) is the softmax over the next-token logits of "A" and "B" alone.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np
import torch
from tqdm import tqdm

from tasks.config import judge_name
from tasks.eval import stats
from tasks.eval.length_control import lc_interval
from tasks.label.gold import load_scorer
from tasks.lm.batching import render_completion
from tasks.lm.models import load_lm
from tasks.runtime.context import RunContext
from tasks.runtime.errors import PipelineError

JUDGE_PROMPT = (
    "Two responses to the same prompt follow. Which one is better: more helpful, more fitting and better "
    "written?\n\nPrompt: {prompt}\n\nResponse A: {a}\n\nResponse B: {b}\n\n"
    "Answer with a single letter, A or B."
)
ANSWER_PREFIX = "Better response:"  # where the judge's letter goes (after the chat template's assistant turn)


def prompt_text(prompt) -> str:
    """A prompt as the judge reads it: plain text, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), render_completion(prompt))


class LMJudge:
    """P(A ≻ B) from a causal LM's next-token logits for "A" and "B" after JUDGE_PROMPT."""

    def __init__(self, model, tok, ctx: RunContext, batch_size: int = 16):
        self.model, self.tok, self.ctx, self.batch_size = model.eval(), tok, ctx, batch_size
        ids = [tok(letter, add_special_tokens=False)["input_ids"] for letter in ("A", "B")]
        if not all(ids) or ids[0][0] == ids[1][0]:
            raise PipelineError("eval.judge_model: its tokenizer does not tell 'A' from 'B' apart as first tokens")
        self.letters = [ids[0][0], ids[1][0]]

    def render(self, prompt, a: str, b: str) -> str:
        question = JUDGE_PROMPT.format(prompt=prompt_text(prompt), a=a, b=b)
        if getattr(self.tok, "chat_template", None):
            messages = [{"role": "user", "content": question}]
            return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + ANSWER_PREFIX
        return f"{question}\n{ANSWER_PREFIX}"

    @torch.no_grad()
    def __call__(self, triples: list[tuple]) -> list[float]:
        """[(prompt, a, b)] -> [P(a ≻ b)], batched by length (little padding), left-padded so the last position is
        the answer's; the LM head runs on that position alone."""
        ids = [self.tok(self.render(*t), add_special_tokens=False)["input_ids"] for t in triples]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out = [0.0] * len(ids)
        starts = range(0, len(ids), self.batch_size)
        for i in tqdm(starts, desc=f"lm judge ({len(triples)} pairs)", dynamic_ncols=True, leave=False):
            batch = order[i : i + self.batch_size]
            width = max(len(ids[j]) for j in batch)
            input_ids = torch.tensor([[pad] * (width - len(ids[j])) + ids[j] for j in batch], device=self.ctx.device)
            mask = torch.tensor(
                [[0] * (width - len(ids[j])) + [1] * len(ids[j]) for j in batch], device=self.ctx.device
            )
            position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
            with self.ctx.autocast():
                logits = self.model(
                    input_ids=input_ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=1
                ).logits
            pair = logits[:, -1, self.letters].float()
            for j, p in zip(batch, torch.softmax(pair, dim=-1)[:, 0].tolist()):
                out[j] = p
        return out


def function_judge(path: str):
    """'module:function' as a judge: pairwise f(prompt, a, b) -> P(a ≻ b), or pointwise f(text) -> score."""
    fn = load_scorer(path, "eval.judges")
    params = [
        p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) < 3:
        return None, fn  # pointwise: the caller scores every sample, as with the gold scorer

    def pairwise(triples: list[tuple]) -> list[float]:
        out = []
        for prompt, a, b in triples:
            p = fn(prompt, a, b)
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0.0 <= float(p) <= 1.0):
                raise PipelineError(f"params.yaml: eval.judges: {path} returned {p!r}, not a probability in [0, 1]")
            out.append(float(p))
        return out

    return pairwise, None


def both_orders(judge, prompts: list, pol_samples: list[dict], sft_samples: list[dict], k: int) -> dict:
    """Every policy sample against every SFT sample of its prompt, in both orders: (n, k·k) outcomes (1 policy
    wins, ½ tie or disagreeing orders, 0 SFT wins) in pair_outcomes' order, and the position-consistency rate."""
    n = len(prompts)
    pol = [[s for s in pol_samples if s["prompt_index"] == p] for p in range(n)]
    sft = [[s for s in sft_samples if s["prompt_index"] == p] for p in range(n)]
    pairs = [(p, a["text"], b["text"]) for p in range(n) for a in pol[p] for b in sft[p]]
    outcomes = in_both_orders(judge, [(prompts[p], a, b) for p, a, b in pairs])
    consistent = float((outcomes != 0.5).mean())
    return {"outcomes": outcomes.reshape(n, k * k), "position_consistency": consistent, "calls": 2 * len(pairs)}


def in_both_orders(judge, triples: list[tuple]) -> np.ndarray:
    """(n,) outcomes of a pairwise judge on (prompt, a, b): asked with a as response A, then with b as A; 1 when
    both orders prefer a, 0 when both prefer b, ½ otherwise (a tie, or the orders disagree)."""
    first = np.array(judge(triples))  # P(a ≻ b), a shown first
    second = np.array(judge([(p, b, a) for p, a, b in triples]))  # P(b ≻ a), b shown first
    wins, losses = (first > 0.5) & (second < 0.5), (first < 0.5) & (second > 0.5)
    return np.where(wins, 1.0, np.where(losses, 0.0, 0.5))


def load_judges(entries: list[str], judge_dir, ctx: RunContext, batch_size: int) -> tuple[dict, dict]:
    """({name: pairwise judge}, {name: pointwise scorer}) for the entries beyond gold, rm and heldout_rm (the
    evaluation's own pointwise scores); the lm judge's model from judge_dir."""
    pairwise, pointwise = {}, {}
    for entry in entries:
        if entry in ("gold", "rm", "heldout_rm"):
            continue
        if entry == "lm":
            try:
                model, tok = load_lm(judge_dir, ctx.device)
            except (OSError, ValueError) as e:
                raise PipelineError(f"eval: cannot load the lm judge from {judge_dir} ({e})") from None
            pairwise["lm"] = LMJudge(model, tok, ctx, batch_size)
        else:
            pair_fn, point_fn = function_judge(entry)
            (pairwise if pair_fn else pointwise)[judge_name(entry)] = pair_fn or point_fn
    return pairwise, pointwise


def win_metrics(name: str, outcomes: np.ndarray, len_diff: np.ndarray, indices: np.ndarray, level: float) -> dict:
    """One judge's win rate vs SFT from its (n_prompts, pairs) outcomes (1 win, ½ tie, 0 loss): the per-prompt
    mean's interval, the length-controlled win rate (tasks/eval/length_control.py) and W/D/L by prompt."""
    per_prompt = outcomes.mean(axis=1)
    out = stats.flat(f"win_rate_{name}", stats.interval(per_prompt, indices, level))
    out |= stats.flat(f"lc_win_rate_{name}", lc_interval(outcomes, len_diff, indices, level))
    return out | {f"{key}_{name}": v for key, v in stats.outcome_counts(per_prompt).items()}
