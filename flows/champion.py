"""`champion` stage: the champion gate on eval's numbers (metrics/eval/*.json) -> metrics/champion.json, the
registry alias on the winner's model version (tasks/eval/champion.py: champion_gate) and plots/champion.png (the
evaluation with the gate's two bars). Its own stage, so that changing the gate (params.yaml: champion) reruns no
evaluation: it reads metrics files and the registry only."""

import json

from prefect import flow, task

from flows import tracking
from flows.common import read_params, run_stage, stage_run, write_metrics
from flows.paths import METRICS, ROOT, ROUND, STAGE_METRICS, STAGE_PLOTS, in_round
from flows.round_inputs import standing_champion
from tasks import config
from tasks.eval.champion import champion_gate, run_standing
from tasks.eval.report import eval_figure
from tasks.runtime.errors import PipelineError
from tasks.sections.stages import POLICY_STAGES

STAGE = "champion"


def evaluated() -> dict[str, dict]:
    """{name: eval metrics} of SFT and every policy eval measured (a skipped one records {"skipped": 1})."""
    out = {}
    for name in ("sft", *POLICY_STAGES):
        path = STAGE_METRICS / "eval" / f"{name}.json"
        if not path.exists():
            raise PipelineError(f"{path.relative_to(ROOT)} is missing: run dvc repro eval")
        m = json.loads(path.read_text())
        if "skipped" not in m:
            out[name] = m
    return out


@task(name="champion-gate")
def gate(metrics: dict[str, dict]) -> dict:
    """The gate's decision, applied to the registry, tagged on the stage's run and printed."""
    import mlflow

    params = read_params()
    policy_model = f"{config.load('tracking', params).registered_prefix}-policy"
    infos = {n: tracking.run_info(n) for n in metrics if n != "sft"}
    cfg, judge = config.load(STAGE, params), config.judge_name(config.gate_judge(params))
    judges = STAGE_METRICS / "eval" / "judges.json"
    agreement = json.loads(judges.read_text()) if judges.exists() else {}
    decision = champion_gate(metrics, infos, cfg, policy_model, tracking.Registry(), judge, agreement)
    mlflow.set_tags({"champion": decision.get("policy", "none"), "champion_reason": decision["reason"]})
    mlflow.log_metric("promoted", decision["promoted"])
    outcome = f"PROMOTED {decision['policy']}" if decision["promoted"] else "not promoted"
    print(f"champion gate: {outcome}: {decision['reason']}")
    return decision


@flow(name=STAGE, log_prints=True)
def champion_flow() -> dict:
    params = read_params()
    metrics = evaluated()
    with stage_run(STAGE, params, STAGE):
        decision = gate(metrics)
        png = STAGE_PLOTS / "champion.png"
        eval_figure(metrics, png, config.load(STAGE, params), config.load("eval", params).ci_level, decision["judge"])
        import mlflow

        mlflow.log_artifact(str(png))
        write_metrics(STAGE, decision | standing(metrics, params))
    return decision


def standing(metrics: dict[str, dict], params: dict) -> dict:
    """The policy of this run standing after this round, which the next round samples from (run_standing: the
    gate's rule against this run's earlier rounds, not against the registry's alias)."""
    before = standing_champion(ROUND - 1) if ROUND > 1 else None
    held = None
    if before:
        path = in_round(METRICS, before[1]) / "eval" / f"{before[0]}.json"
        held = {"policy": before[0], "round": before[1], **json.loads(path.read_text())}
    judges = STAGE_METRICS / "eval" / "judges.json"
    agreement = json.loads(judges.read_text()) if judges.exists() else {}
    judge = config.judge_name(config.gate_judge(params))
    now, why = run_standing(metrics, ROUND, held, config.load(STAGE, params), judge, agreement)
    print(f"standing after round {ROUND}: {now.get('standing_policy', 'sft')}: {why}")
    return now


def check_gate(params: dict) -> None:
    """Before anything runs: the gate's judge resolves and is among eval's judges; eval's numbers are there and
    their headline win rate is that judge's (eval ran with this champion.judge)."""
    judge = config.judge_name(config.gate_judge(params))
    for name, m in evaluated().items():
        if name != "sft" and m.get(f"win_rate_{judge}") != m.get("win_rate"):
            raise PipelineError(f"metrics/eval/{name}.json: its win rate is not {judge}'s: run dvc repro eval")


if __name__ == "__main__":
    run_stage(champion_flow, (STAGE, "eval", "sample", "tracking"), check_gate)
