"""Who judges an evaluation (eval.judges resolved, the gate's judge, the held-out comparisons, the judges' model
directories) and the preflight that checks them before any model loads; the eval and eval_sft stages share it."""

from flows.paths import HELDOUT_PAIRS, MODELS, model_dir
from tasks import config
from tasks.eval.evaluate import Judging
from tasks.eval.judges import function_judge
from tasks.label.gold import load_scorer
from tasks.runtime.errors import PipelineError
from tasks.runtime.files import read_jsonl


def judging(params: dict) -> Judging:
    """Who judges this evaluation (eval.judges resolved, the gate's judge) and what they read."""
    listed, rm = config.judges(params), config.load("rm", params)
    return Judging(
        judges=listed,
        gate=config.judge_name(config.gate_judge(params)),
        gold_scorer=config.load("sample", params).gold_scorer,
        rm_dirs={name: model_dir(name) for name in ("rm", "heldout_rm")},
        heldout_pairs=read_jsonl(HELDOUT_PAIRS) if "heldout_rm" in listed and HELDOUT_PAIRS.exists() else [],
        rm_heldout_frac=rm.heldout_frac,
        rm_lengths=(rm.max_prompt_len, rm.max_length - rm.max_prompt_len),
        judge_dir=MODELS / "judge",
    )


def check_judges(params: dict) -> None:
    """A preflight: the judges resolve (gold only with a scorer, the gate's judge among them), the lm judge's
    model is a model directory, every function judge imports, the gate's RM judge trained."""
    cfg, listed, gate = config.load("eval", params), config.judges(params), config.gate_judge(params)
    if gate in ("rm", "heldout_rm") and (model_dir(gate) / "SKIPPED").exists():
        raise PipelineError(f"params.yaml: champion.judge is {gate}, but models/{gate} records 'skipped'")
    if "gold" in listed:
        load_scorer(config.load("sample", params).gold_scorer)
    if "lm" in listed and not (MODELS / "judge" / "config.json").exists():
        raise PipelineError(
            f"eval: lm judges, but models/judge holds no model: run dvc repro judge ({cfg.judge_model})"
        )
    for entry in listed:
        if ":" in entry:  # a pairwise function asked once here: a non-probability stops eval before any model loads
            pairwise, _ = function_judge(entry)
            if pairwise is not None:
                pairwise([("A prompt", " one response", " another")])
