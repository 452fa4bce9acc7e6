"""params.yaml, read and validated: one typed section per top-level key (tasks/sections/: types, bounds and a one-line
description per field), the sections that start from another's values, and one-line errors.

params.yaml holds every value a run uses (DVC tracks only what is there); the sections' defaults equal its values
(tests/test_config.py fails when they drift apart), so a config made in code (tests, benches) is the default
run's. A section is validated before any work starts; a bad value raises ConfigError with one line naming the
field. The `rto`, `grpo` and `rloo` sections inherit every value of `ppo` and set only what differs.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from tasks.runtime.errors import PipelineError
from tasks.sections.base import Section
from tasks.sections.data import BaseConfig, CorpusConfig, LabelsConfig, PrepareConfig, SampleConfig
from tasks.sections.policy import GRPOConfig, PPOConfig, RLOOConfig, RTOConfig
from tasks.sections.rounds import RoundsConfig
from tasks.sections.run import (
    ChampionConfig,
    ComputeConfig,
    EvalConfig,
    FrontierConfig,
    PipelineConfig,
    SeedsConfig,
    TrackingConfig,
)
from tasks.sections.training import DPOConfig, RMConfig, SFTConfig


class ConfigError(PipelineError):
    """A params.yaml value is wrong; the message names the field."""


SECTIONS = {
    "base": BaseConfig,
    "corpus": CorpusConfig,
    "prepare": PrepareConfig,
    "sft": SFTConfig,
    "sample": SampleConfig,
    "labels": LabelsConfig,
    "rm": RMConfig,
    "ppo": PPOConfig,
    "eval": EvalConfig,
    "champion": ChampionConfig,
    "dpo": DPOConfig,
    "rto": RTOConfig,
    "grpo": GRPOConfig,
    "rloo": RLOOConfig,
    "pipeline": PipelineConfig,
    "frontier": FrontierConfig,
    "seeds": SeedsConfig,
    "rounds": RoundsConfig,
    "compute": ComputeConfig,
    "tracking": TrackingConfig,
}


# section -> the section whose values it starts from (only the fields the section has; its reward, when set,
# replaces the parent's instead of merging into it)
INHERITS = {"rto": "ppo", "grpo": "ppo", "rloo": "ppo"}


def deep_merge(base: dict, over: dict) -> dict:
    """base with over's values on top, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def section_type(section: str) -> type[Section]:
    return SECTIONS[section]


def read_params(path: Path) -> dict:
    """params.yaml as a mapping of sections; a missing file or bad YAML is one line naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return data


def _one_line(section: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in (section, *e["loc"]))
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"params.yaml: {loc}: unknown key (typo?)"
    got = e.get("input")
    got = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"params.yaml: {loc}: {msg}{got}"


def resolved(section: str, params: dict) -> dict:
    """The raw values of a section, on top of the section it inherits from (rto: ppo's values + rto's)."""
    if section not in params:
        raise ConfigError(f"params.yaml: section '{section}' is missing")
    raw = params[section] or {}
    if parent := INHERITS.get(section):
        fields = SECTIONS[section].model_fields
        inherited = {k: v for k, v in resolved(parent, params).items() if k in fields}
        merged = deep_merge(inherited, raw)
        if "reward" in raw:
            merged["reward"] = raw["reward"]
        return merged
    return raw


def load(section: str, params: dict):
    """The validated config of one section of params (as read_params returns them)."""
    raw = resolved(section, params)
    try:
        return SECTIONS[section].model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(section, err)) from None


def judges(params: dict) -> list[str]:
    """eval.judges with auto resolved: gold only where the labels came from the gold scorer (simulated), never a
    silent default on a team's own labels; then the held-out RM and the proxy RM."""
    ev, smp = load("eval", params), load("sample", params)
    if ev.judges == "auto":
        return (["gold"] if smp.labeler == "simulated" else []) + ["heldout_rm", "rm"]
    if "gold" in ev.judges and not smp.gold_scorer:
        raise ConfigError("params.yaml: eval.judges has gold, but sample.gold_scorer is null: name one or drop gold")
    return list(ev.judges)


def gate_judge(params: dict) -> str:
    """The judge whose win rate the champion gate reads (champion.judge, auto resolved)."""
    listed, chosen = judges(params), load("champion", params).judge
    if chosen == "auto":
        others = [j for j in listed if j != "rm"]
        return next((j for j in ("gold", "heldout_rm", "lm") if j in listed), others[0] if others else "rm")
    if chosen not in listed:
        raise ConfigError(f"params.yaml: champion.judge: {chosen!r} is not one of eval.judges ({', '.join(listed)})")
    return chosen


def judge_name(entry: str) -> str:
    """An eval.judges entry as it appears in metric names: lm, or the function's dotted path."""
    return entry.replace(":", ".")


def rounds(params: dict):
    """The rounds section, checked against the rest: a later round needs new labels on new samples (a dataset
    labeler has none), and samples from a policy stage that trains."""
    cfg, labeler = load("rounds", params), load("sample", params).labeler
    if cfg.count > 1 and labeler == "dataset":
        raise ConfigError(
            f"params.yaml: rounds.count: {cfg.count} rounds need new comparisons of each round's samples, which "
            "sample.labeler: dataset cannot give (use simulated or people, or rounds.count: 1)"
        )
    algorithms = load("pipeline", params).algorithms
    if cfg.count > 1 and cfg.sample_from != "champion" and cfg.sample_from not in algorithms:
        raise ConfigError(
            f"params.yaml: rounds.sample_from: {cfg.sample_from} does not train (pipeline.algorithms: "
            f"{', '.join(algorithms)})"
        )
    return cfg
