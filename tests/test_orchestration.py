"""Orchestration for real: the pipeline deployed to a Prefect process work pool, a worker picking up two runs
with parameter overrides (the second queued behind the first), each recorded as a DVC experiment with one MLflow
story on a real MLflow server; then the Prefect UI in a browser. Its own module (and project: a copy of the
session's tiny project after sft), so that it runs beside test_pipeline.py's long chain on the other worker."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import BIN, free_port, project_env, run_cmd, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full(tiny_pipeline, tmp_path_factory):
    """A copy of the tiny project after `dvc repro sft` (its DVC cache too: base and sft are not run again)."""
    root = tmp_path_factory.mktemp("orchestration") / "proj"
    ignore = shutil.ignore_patterns(".prefect", "mlflow.db", "mlartifacts")
    shutil.copytree(tiny_pipeline["root"], root, ignore=ignore)
    run_cmd(root, "git", "add", "-A")
    run_cmd(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny after sft")
    return {"root": root, "api": tiny_pipeline["prefect_api"]}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow server on 127.0.0.1 (SQLite backend), stopped by PID."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = dict(
        os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"
    )
    proc = start_server(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--default-artifact-root",
            (home / "artifacts").as_uri(),
            "--workers",
            "1",
        ],
        f"http://127.0.0.1:{port}/health",
        home,
        env,
    )
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def test_deployed_pipeline_runs_on_a_worker_as_a_dvc_experiment_with_one_mlflow_story(full, mlflow_server):
    """Two runs clicked at once: the second queues behind the first (the deployment's concurrency limit), and
    both end as complete DVC experiments with complete MLflow parent runs."""
    root, api = full["root"], full["api"]
    env = {"PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_server, "RLHF_PROJECT_DIR": str(root)}
    run_cmd(root, "prefect", "work-pool", "create", "test-cpu", "--type", "process", **env)
    run_cmd(root, "prefect", "--no-prompt", "deploy", "-n", "pipeline-cpu", "--pool", "test-cpu", **env)
    flow_run_ids = []
    for name, beta in (("ui-run", "0.3"), ("ui-run-2", "0.25")):
        out = run_cmd(
            root,
            "prefect",
            "deployment",
            "run",
            "rlhf-pipeline/pipeline-cpu",
            "-p",
            f"dpo_kl_coef={beta}",
            "-p",
            'algorithms=["dpo"]',
            "-p",
            f"name={name}",
            **env,
        ).stdout
        flow_run_ids.append(out.split("UUID:")[1].split()[0] if "UUID:" in out else None)
    flow_run_id = flow_run_ids[0]
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "test-cpu"],
        cwd=root,
        env=project_env(root, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        state, deadline = None, time.time() + 900
        while time.time() < deadline:
            out = run_cmd(
                root, "prefect", "flow-run", "ls", "--flow-name", "rlhf-pipeline", "--limit", "2", **env, COLUMNS="250"
            ).stdout
            state = next((s for s in ("FAILED", "CRASHED") if s in out), None)
            if state or out.count("COMPLETED") == 2:
                state = state or "COMPLETED"
                break
            time.sleep(3)
    finally:  # SIGTERM, then SIGKILL if the worker is still tearing down after 20 s (CI saw > 30 s once)
        stop_server(worker)
    assert state == "COMPLETED", out
    # a DVC experiment with the override
    exps = json.loads(run_cmd(root, "dvc", "exp", "show", "--json").stdout)
    names = [r.get("name") for e in exps for g in (e.get("experiments") or []) for r in g.get("revs", [])]
    assert {"ui-run", "ui-run-2"} <= set(names)
    # the stage flow runs reported to the same Prefect server, tagged with the pipeline's flow run
    stages = run_cmd(root, "prefect", "flow-run", "ls", "--limit", "30", **env, COLUMNS="250").stdout
    for stage in (" dpo ", " rto ", " eval "):
        assert stage in stages.replace("│", " ")
    # one MLflow parent run, every stage nested under it, with the tags
    mlflow.set_tracking_uri(mlflow_server)
    parents = mlflow.search_runs(
        experiment_names=["rlhf-pipeline"], filter_string="tags.stage = 'pipeline'", order_by=["start_time ASC"]
    )
    assert sorted(parents["tags.dvc_experiment"]) == ["ui-run", "ui-run-2"]  # the worker takes either first
    assert (parents["status"] == "FINISHED").all()
    assert parents.iloc[1]["start_time"] >= parents.iloc[0]["end_time"]  # queued, not run side by side
    by_experiment = parents.set_index("tags.dvc_experiment", drop=False)
    assert float(by_experiment.loc["ui-run-2", "params.dpo_kl_coef"]) == 0.25
    parent = by_experiment.loc["ui-run"]
    assert parent["status"] == "FINISHED" and parent["tags.dvc_experiment"] == "ui-run"
    assert len(parent["tags.git_commit"]) == 40 and parent["tags.prefect_flow_run_id"]
    assert float(parent["params.dpo_kl_coef"]) == 0.3 and "metrics.dpo/win_rate" in parent
    children = mlflow.search_runs(
        experiment_names=["rlhf-pipeline"], filter_string=f"tags.mlflow.parentRunId = '{parent['run_id']}'"
    )
    assert {"dpo", "eval"} <= set(children["tags.dvc_stage"])
    assert (children["tags.dvc_experiment"] == "ui-run").all()
    assert children["tags.prefect_flow_run_id"].notna().all()
    if flow_run_id:
        assert parent["tags.prefect_flow_run_id"] == flow_run_id
    # the pipeline run's graph: one node per DVC stage in DAG order, a stage that ran linked as its child flow
    # run, the stages DVC did not rerun marked Skipped
    nodes = stage_nodes(api, parent["tags.prefect_flow_run_id"])
    names = [n.name.removesuffix(" (skipped)") for n in nodes]
    assert [s for s in names if s in ("base", "sft", "dpo", "eval")] == ["base", "sft", "dpo", "eval"], names
    by_name = dict(zip(names, nodes))
    assert by_name["sft"].state.name == "Skipped" and by_name["base"].state.name == "Skipped"
    for stage in ("dpo", "eval"):
        assert by_name[stage].state.type.value == "COMPLETED" and by_name[stage].state.name != "Skipped"
        assert by_name[stage].state.state_details.child_flow_run_id, f"{stage} is not linked to its flow run"


def stage_nodes(api: str, flow_run_id: str) -> list:
    """The task runs of a flow run (its graph's nodes), in the order they started."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return sorted(runs, key=lambda r: r.created)


def test_the_ui_shows_the_run_form_and_the_stage_nodes(full, browser, tmp_path):
    """In a real browser: the Custom run form with params.yaml's values and the descriptions, and the pipeline
    run's stage flow runs under it (screenshots to $RLHF_SCREENSHOTS, else a temporary directory)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from selenium.webdriver.support.ui import WebDriverWait

    api = full["api"]
    shots = Path(os.environ.get("RLHF_SCREENSHOTS") or tmp_path)
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("rlhf-pipeline/pipeline-cpu")
        runs = client.read_flow_runs(limit=200)
        run = next(r for r in runs if r.deployment_id == deployment.id and r.state and r.state.is_completed())
    ui = api.removesuffix("/api")
    browser.get(f"{ui}/deployments/deployment/{deployment.id}/run")
    WebDriverWait(browser, 90).until(lambda d: "params.yaml dpo.kl_coef" in d.page_source)
    page = browser.page_source
    assert "params.yaml ppo.kl.coef" in page and "which policy stages do work" in page
    browser.save_screenshot(str(shots / "prefect-run-form.png"))
    browser.get(f"{ui}/runs/flow-run/{run.id}")
    WebDriverWait(browser, 90).until(lambda d: run.name in d.page_source)
    time.sleep(5)  # the graph draws itself after the page
    browser.save_screenshot(str(shots / "prefect-pipeline-graph.png"))
    assert (shots / "prefect-pipeline-graph.png").stat().st_size > 10_000
