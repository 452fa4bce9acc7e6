"""The whole pipeline as one Prefect flow: what a deployment runs when someone clicks "Run" in the UI.

It runs the DVC pipeline as a recorded DVC experiment (`dvc exp run -n <name> -S key=value ...`; with no
overrides and `as_experiment=False`, plain `dvc repro`), so every UI-triggered run is reproducible and
comparable with `dvc exp show`. One MLflow parent run per pipeline run: every stage's run is nested under
it (its id travels to the stage processes DVC starts in RLHF_PARENT_RUN_ID), and it is tagged with the git
commit, the DVC experiment name and this Prefect flow run's id; at the end it gets each policy's eval
numbers (`ppo/win_rate`, `dpo/kl`, ...) and the knobs (KL coefficient, β, γ) as params.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

from prefect import Task, flow, get_run_logger, task
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from flows.common import PIPELINE_RUN, mlflow_setup, read_params
from flows.paths import METRICS, ROOT, in_round
from flows.rounds import write_rounds
from tasks import config
from tasks.runtime.errors import PipelineError
from tasks.runtime.files import git_commit
from tasks.sections.stages import KL_KNOBS, POLICY_STAGES, PolicyStage


def form_field(section: str, dotted: str) -> Any:
    """The Custom run form's field for params.yaml's <section>.<dotted key>: today's value as its default, the
    typed config's bounds and description (tasks/config.py). Read when the deployment is made (`make worker`
    deploys again at each start), so the form shows the checkout's params.yaml."""
    *path, key = dotted.split(".")
    try:
        node = config.load(section, read_params())
    except PipelineError:  # a broken params.yaml: the form shows the built-in default; the run will say why
        node = config.SECTIONS[section]()
    for part in path:
        node = getattr(node, part)
    info = type(node).model_fields[key]
    bounds = {  # Prefect's form reads bounds from the JSON schema, where it puts a Field's extra keys
        name: getattr(m, attr)
        for m in info.metadata
        for attr, name in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum"))
        if getattr(m, attr, None) is not None
    }
    return FieldInfo.merge_field_infos(
        info,
        default=getattr(node, key),
        description=f"params.yaml {section}.{dotted}: {info.description}",
        json_schema_extra=bounds,
    )


def check_knob(arg: str, value: Any) -> None:
    """A form value outside its params.yaml bounds stops the run before any work, in one line."""
    info = KNOBS[arg]
    try:
        typed = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        TypeAdapter(typed).validate_python(value)
    except ValidationError as e:
        raise PipelineError(f"{arg}: {e.errors()[0]['msg']} (got {value!r})") from None


KNOB_KEYS = {  # the run form's fields that people sweep -> their params.yaml key (every policy stage's KL strength)
    "algorithms": "pipeline.algorithms",
    **KL_KNOBS,
    "ptx_coef": "ppo.ptx_coef",
    "grpo_group_size": "grpo.group_size",
    "rloo_group_size": "rloo.group_size",
    "rounds": "rounds.count",
}
KNOBS = {arg: form_field(*key.split(".", 1)) for arg, key in KNOB_KEYS.items()}  # defaults: today's params.yaml


def current(params: dict, key: str):
    """The validated value of a dotted params key ('rto.kl.coef': with what rto inherits from ppo)."""
    section, *path = key.split(".")
    value = config.load(section, params)
    for attr in path:
        value = getattr(value, attr)
    return value


@contextlib.contextmanager
def checkout_lock(log, path: Path | None = None):
    """One pipeline run at a time in this checkout (DVC's workspace and lock are one per checkout): a second
    run waits here, saying so, instead of failing on DVC's lock or touching the first run's experiment."""
    path = path or ROOT / ".dvc" / "tmp" / "rlhf-pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            log.info("waiting for the pipeline run that holds %s (%s)", path, fh.read().strip())
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}")
        fh.flush()
        yield


UP_TO_DATE = re.compile(r"^Stage '([^']+)' (?:didn't change|is cached)")  # DVC's words for a stage it skips


def dvc_stage() -> None:
    """A DVC stage in the pipeline run's graph (a stage that runs is linked here as the child flow run)."""


def record_skipped(stage: str, how: str) -> None:
    """A node for a stage DVC did not rerun, in DAG order with the others, in state Completed('Skipped')."""
    from uuid import uuid4

    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Completed

    state = Completed(name="Skipped", message=f"DVC: {how}")
    with get_client(sync_client=True) as client:
        task = Task(name=stage, fn=dvc_stage)
        name = f"{stage} (skipped)"  # the graph shows names, not state names
        client.create_task_run(task, flow_run.id, f"{stage}-{uuid4().hex[:8]}", name=name, state=state)


@task(name="dvc-exp-run", retries=1, retry_delay_seconds=10)
def run_dvc(args: list[str], env: dict) -> str:
    """The DVC pipeline in a subprocess; its output streams to the flow's log; each stage becomes a node."""
    log = get_run_logger()
    log.info("$ %s", " ".join(args))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith(("Running stage", "Stage", "ERROR", "error:", "Ran experiment")):
            log.info(line.rstrip())
        if skipped := UP_TO_DATE.match(line):
            record_skipped(skipped[1], line.strip().split(" ", 2)[2])
    if proc.wait() != 0:
        raise PipelineError(f"{' '.join(args[:3])} failed: " + " | ".join(lines[-3:]))
    return "\n".join(lines)


@flow(name="rlhf-pipeline", log_prints=True)
def pipeline(
    algorithms: list[PolicyStage] = KNOBS["algorithms"],
    ppo_kl_coef: float = KNOBS["ppo_kl_coef"],
    ptx_coef: float = KNOBS["ptx_coef"],
    dpo_kl_coef: float = KNOBS["dpo_kl_coef"],
    rto_kl_coef: float = KNOBS["rto_kl_coef"],
    grpo_kl_coef: float = KNOBS["grpo_kl_coef"],
    grpo_group_size: int = KNOBS["grpo_group_size"],
    rloo_kl_coef: float = KNOBS["rloo_kl_coef"],
    rloo_group_size: int = KNOBS["rloo_group_size"],
    rounds: int = KNOBS["rounds"],
    overrides: list[str] | None = None,
    as_experiment: bool = True,
    name: str | None = None,
) -> dict:
    """The whole pipeline as one DVC experiment. A knob left at params.yaml's value is not overridden.

    Args:
        algorithms: which policy stages train (the others record 'skipped'); rto needs dpo
        ppo_kl_coef: the coefficient of PPO-ptx's KL penalty to the SFT model
        ptx_coef: PPO-ptx: weight of the pretraining LM loss (0: plain PPO)
        dpo_kl_coef: DPO's KL strength (its beta)
        rto_kl_coef: the coefficient of RTO's KL penalty
        grpo_kl_coef: the coefficient of GRPO's KL to the SFT model
        grpo_group_size: responses GRPO samples per prompt
        rloo_kl_coef: the coefficient of RLOO's KL penalty
        rloo_group_size: responses RLOO samples per prompt
        rounds: rounds of iterated RLHF (new comparisons from the best policy, a new RM, new policies)
        overrides: any other params.yaml value, as section.key=value (e.g. sft.lr=1e-4)
        as_experiment: record the run as a DVC experiment (off, with no overrides: plain dvc repro)
        name: the DVC experiment's name (default: pipeline-YYYYMMDD-HHMMSS)
    """
    from prefect.runtime import flow_run

    params = read_params()
    knobs = {
        "algorithms": algorithms,
        "ppo_kl_coef": ppo_kl_coef,
        "ptx_coef": ptx_coef,
        "dpo_kl_coef": dpo_kl_coef,
        "rto_kl_coef": rto_kl_coef,
        "grpo_kl_coef": grpo_kl_coef,
        "grpo_group_size": grpo_group_size,
        "rloo_kl_coef": rloo_kl_coef,
        "rloo_group_size": rloo_group_size,
        "rounds": rounds,
    }
    for arg, value in knobs.items():
        check_knob(arg, value)
    if "rto" in algorithms and "dpo" not in algorithms:
        raise PipelineError("algorithms: rto uses the dpo stage's model: add dpo")
    sets = list(overrides or [])
    for arg, value in knobs.items():
        if value is not None and value != current(params, KNOB_KEYS[arg]):
            sets.append(f"{KNOB_KEYS[arg]}={json.dumps(value) if isinstance(value, list) else value}")
    name = name or f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}"
    args = (
        ["dvc", "exp", "run", "-n", name] + [a for s in sets for a in ("-S", s)]
        if as_experiment or sets
        else ["dvc", "repro"]
    )
    mlflow = mlflow_setup(read_params())
    tags = {
        "git_commit": git_commit(ROOT),
        "dvc_experiment": name if args[1] == "exp" else "workspace",
        "prefect_flow_run_id": str(flow_run.id),
        "stage": "pipeline",
    }
    lock = checkout_lock(get_run_logger())  # taken before the MLflow run starts: a waiting run is not 'running'
    with lock, mlflow.start_run(run_name=name, tags=tags, log_system_metrics=True) as run:
        write_rounds(rounds)  # dvc.yaml's stages for that many rounds: part of the experiment
        mlflow.log_params({"overrides": " ".join(sets) or "(none)"})
        env = dict(os.environ, RLHF_PARENT_RUN_ID=run.info.run_id, RLHF_DVC_EXPERIMENT=tags["dvc_experiment"])
        env[PIPELINE_RUN] = str(flow_run.id)  # the stage flow runs become this run's children (graph nodes)
        try:
            run_dvc(args, env)
            run_dvc(["dvc", "checkout", "--relink"], env)  # outputs linked into DVC's cache, not copied
        except Exception as e:
            mlflow.set_tag("error", str(e)[:5000])
            mlflow.end_run(status="FAILED")
            raise
        params = read_params()  # as the run left it (`dvc exp run -S` writes its overrides there)
        logged = {arg: current(params, key) for arg, key in KNOB_KEYS.items() if arg != "algorithms"}
        last = in_round(METRICS, rounds)  # the last round's evaluation is the run's result
        logged |= {"kl_coef": logged.pop("ppo_kl_coef"), "ptx_coef": logged.pop("ptx_coef")}
        mlflow.log_params(logged | {"algorithms": ",".join(config.load("pipeline", params).algorithms)})
        results = {}
        for policy in ("sft", *POLICY_STAGES):
            path = last / "eval" / f"{policy}.json"
            m = json.loads(path.read_text()) if path.exists() else {}
            if "kl" in m:
                results[policy] = m
                mlflow.log_metrics({f"{policy}/{k}": float(v) for k, v in m.items()})  # win_rate: the gate judge's

    def interval(m: dict) -> str:
        return f" [{m['win_rate_ci_low']:.3f}, {m['win_rate_ci_high']:.3f}]" if "win_rate_ci_low" in m else ""

    print(
        f"pipeline {name}: "
        + ", ".join(f"{p} win {m['win_rate']:.3f}{interval(m)} kl {m['kl']:.2f}" for p, m in results.items())
    )
    return {"experiment": name, "mlflow_run_id": run.info.run_id, "results": results}


if __name__ == "__main__":
    from tasks.runtime.errors import die_cleanly

    die_cleanly(pipeline)
