"""Gold scorers: `str -> float` callables that stand in for human judgement (params: `sample.gold_scorer`).

Any importable callable works, named 'module:function'. The default is VADER's compound sentiment score
(Hutto & Gilbert 2014, the `vadersentiment` package, lexicon shipped, no download): in [-1, 1], higher
is more positive: the DPO paper's controlled-sentiment preference.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from tasks.runtime.errors import PipelineError


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader(text: str) -> float:
    """VADER compound score in [-1, 1] (positive sentiment is preferred)."""
    return float(_vader().polarity_scores(text)["compound"])


def shorter(text: str) -> float:
    """Prefers shorter completions: minus the number of words (a deliberately different preference)."""
    return -float(len(text.split()))


def scored_text(prompt, completion: str) -> str:
    """What a gold scorer judges: the whole text (prompt + continuation) for plain prompts, the completion
    alone for chat prompts (a list of messages)."""
    return prompt + completion if isinstance(prompt, str) else completion


def load_scorer(path: str, param: str = "sample.gold_scorer"):
    """Import 'module:function'; one line naming the param if it does not import or is not callable."""
    mod, _, fn = path.partition(":")
    try:
        f = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError, ValueError) as e:
        raise PipelineError(f"params.yaml: {param}: cannot import '{path}' ({e})") from None
    if not callable(f):
        raise PipelineError(f"params.yaml: {param}: '{path}' is not callable")
    return f
