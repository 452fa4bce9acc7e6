"""`rm` stage: the reward model (scalar head on models/sft) trained on data/comparisons -> models/rm."""

import json

from prefect import flow, task

from flows.common import finish, read_params, run_stage, skip, stage_run, step_logger
from flows.paths import COMPARISONS, ROUND, comparisons_dir, model_dir
from flows.round_inputs import rm_inputs
from flows.stages import check_batches_split, checkpoint_dir, register, train_in_processes
from tasks import config
from tasks.eval import stats
from tasks.runtime.device import run_context
from tasks.runtime.files import atomic_path, read_jsonl
from tasks.runtime.result import TrainResult
from tasks.sections.policy import RM_REWARD
from tasks.sections.stages import ONLINE_STAGES
from tasks.train.reward_model import heldout_accuracy, train_rm


def rm_users(params: dict) -> list[str]:
    """The online stages that train in this run and whose reward includes the trained RM."""
    algorithms = config.load("pipeline", params).algorithms
    return [s for s in ONLINE_STAGES if s in algorithms and RM_REWARD in config.load(s, params).reward]


def train(cfg, out_dir, ctx, on_step) -> TrainResult:
    """The training itself (one of the training processes): SFT model (or, continuing, the previous round's RM) +
    labeled pairs -> out_dir."""
    start, pairs = rm_inputs(read_params())
    return train_rm(cfg, start, pairs, out_dir, ctx, on_step, checkpoint_dir("rm"))


def log_label_report() -> None:
    """People's labels the RM trains on, in its MLflow run: labels per annotator, agreement (labels_* metrics,
    the whole report as labels_report.json)."""
    import mlflow

    path = COMPARISONS / "report.json"
    if path.exists():
        report = json.loads(path.read_text())
        mlflow.log_metrics({f"labels_{k}": float(v) for k, v in report.items() if isinstance(v, (int, float))})
        mlflow.log_dict(report, "labels_report.json")


@task(name="rm-on-every-round")
def across_rounds(rm_dir) -> dict:
    """This round's RM on every round's held-out pairs, and the previous round's RM on this round's: the shift in
    what it is asked to judge, which a new RM is meant to fix. The two on this round's pairs are compared with a
    paired bootstrap over prompts (eval's resamples, seed and level): new minus previous, labels' and gold's."""
    params = read_params()
    cfg, ctx = config.load("rm", params), run_context(config.load("compute", params), "rm")
    out, now = {}, {}
    for r in range(1, ROUND + 1):
        now = heldout_accuracy(rm_dir, read_jsonl(comparisons_dir(r) / "pairs.jsonl"), cfg, ctx)
        out |= {f"heldout_accuracy_r{r}": now["accuracy"], f"heldout_n_pairs_r{r}": now["n_pairs"]}
    before = heldout_accuracy(model_dir("rm", ROUND - 1), read_jsonl(comparisons_dir(ROUND) / "pairs.jsonl"), cfg, ctx)
    out[f"previous_rm_heldout_accuracy_r{ROUND}"] = before["accuracy"]
    if "gold_accuracy" in before:
        out[f"previous_rm_heldout_gold_accuracy_r{ROUND}"] = before["gold_accuracy"]
    return out | new_minus_previous(now["per_prompt"], before["per_prompt"], config.load("eval", params))


def new_minus_previous(new: dict, previous: dict, ev) -> dict:
    """rm_gain_r<r> (label accuracy) and rm_gold_gain_r<r>, each with _se, _ci_low, _ci_high: this round's RM minus
    the previous round's on this round's held-out pairs (stats.share_difference)."""
    indices = stats.bootstrap_indices(len(new["totals"]), ev.bootstrap_resamples, ev.seed)
    out = {}
    for name, hits, totals in (("rm_gain", "hits", "totals"), ("rm_gold_gain", "gold_hits", "gold_totals")):
        if sum(new[totals]) == 0:
            continue
        d = stats.share_difference(new[hits], previous[hits], new[totals], indices, ev.ci_level)
        out |= stats.flat(f"{name}_r{ROUND}", {"mean": d["diff"], "se": d["se"], "lo": d["lo"], "hi": d["hi"]})
    return out


@task(name="train-and-normalize")
def train_task(out_dir: str) -> TrainResult:
    return train_in_processes("rm", train, out_dir, step_logger("rm"))


@flow(name="rm", log_prints=True)
def rm_flow() -> dict:
    if not rm_users(read_params()):
        skip("rm", "no stage in pipeline.algorithms optimizes the RM (their reward: Python functions)")
        return {}
    with stage_run("rm", read_params()), atomic_path(model_dir("rm")) as staging:
        log_label_report()
        out = train_task(str(staging))
        metrics = out.metrics | {"n_pairs": len(rm_inputs(read_params())[1])}  # a later round's: every round's
        if ROUND > 1:
            metrics |= across_rounds(staging)
        register("rm", str(staging), "reward", metrics)
        finish("rm", metrics, out.history)
    print(f"rm: {metrics}")
    return metrics


if __name__ == "__main__":
    run_stage(
        rm_flow,
        ("rm", "compute", "tracking", "pipeline", *ONLINE_STAGES),
        check_batches_split("rm"),
    )
