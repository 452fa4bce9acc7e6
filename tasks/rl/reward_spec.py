"""The score a policy stage optimizes (params.yaml: `<stage>.reward`): the trained reward model, Python
functions, or a weighted sum of several.

    score(x, y) = Σ_i w_i · s_i(x, y)        s_rm = gain · RM(x, y) + bias  (the rm stage's normalization)

A function is named 'module:function'. With two parameters it is called as f(prompt, response) (the prompt as
the data holds it: text, or a list of chat messages); with one, as a gold scorer is: f(text), the prompt and
response together (the response alone for chat prompts). It must return a finite number: anything else, or
an exception, stops the stage with one line naming the function and the sample.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

import torch

from tasks.label.gold import load_scorer, scored_text
from tasks.runtime.errors import PipelineError
from tasks.sections.policy import RM_REWARD
from tasks.train.reward_model import normalized


def needs_rm(spec: dict[str, float]) -> bool:
    return RM_REWARD in spec


def metric_name(name: str) -> str:
    """A reward term's column / MLflow metric name ('tasks.label.gold:shorter' -> 'reward_tasks.label.gold.shorter')."""
    return "reward_" + name.replace(":", ".")


def load_functions(spec: dict[str, float], section: str) -> dict[str, Callable]:
    """{name: callable} of the spec's Python terms (the RM term is the caller's)."""
    return {name: load_scorer(name, f"{section}.reward") for name in spec if name != RM_REWARD}


def takes_prompt(fn: Callable) -> bool:
    """True for f(prompt, response); False for a gold scorer f(text)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it as a scorer
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def function_scores(name: str, fn: Callable, prompts: list, responses: list[str]) -> torch.Tensor:
    """fn on every (prompt, response) as a (B,) float tensor; one line naming fn and the sample on failure."""
    two = takes_prompt(fn)
    out = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        where = f"sample {i} (prompt {str(prompt)[:60]!r}, response {response[:60]!r})"
        try:
            value = fn(prompt, response) if two else fn(scored_text(prompt, response))
        except Exception as e:
            raise PipelineError(f"reward {name} raised {type(e).__name__}: {e} on {where}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise PipelineError(f"reward {name} returned {value!r}, not a finite number, on {where}")
        out.append(float(value))
    return torch.tensor(out, dtype=torch.float32)


def reward_parts(
    spec: dict[str, float],
    rm_raw: torch.Tensor | None,
    norm: dict,
    functions: dict,
    prompts: list,
    responses: list[str],
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """{term: (B,) score}: the RM's normalized score (from its raw head output) and each function's."""
    parts = {}
    if needs_rm(spec):
        parts[RM_REWARD] = normalized(rm_raw, norm)
    for name, fn in functions.items():
        parts[name] = function_scores(name, fn, prompts, responses).to(device)
    return parts


def combined(spec: dict[str, float], parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_i w_i · s_i: the weighted sum of the terms, (B,)."""
    return sum(weight * parts[name] for name, weight in spec.items())
