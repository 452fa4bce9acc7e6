"""`make ui` (python -m flows.ui): both servers on 127.0.0.1 only, no MLflow job workers, stopped by Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, make_project, project_env

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """Every process below pid, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def listening(port: int) -> set[str]:
    """The addresses a TCP port is listened on (IPv4 and IPv6), from /proc/net/tcp*."""
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                addrs.add("127.0.0.1" if addr == "0100007F" else addr)
    return addrs


def start_ui(cmd: list[str], root: Path, env: dict) -> subprocess.Popen:
    """`make ui`'s process, once it has written .ui.env (both servers answer)."""
    ui = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not (root / ".ui.env").exists() and ui.poll() is None and time.time() < deadline:
        time.sleep(1)
    if not (root / ".ui.env").exists():
        ui.send_signal(signal.SIGINT)  # it stops both servers on its way out
        ui.wait(timeout=60)
        raise AssertionError(ui.stdout.read() or "no .ui.env in 180 s")
    return ui


def test_make_ui_starts_two_local_servers_without_mlflow_job_workers(tmp_path):
    root = make_project(tmp_path / "proj")
    prefect_port, mlflow_port = free_port(), free_port()
    env = project_env(root, PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "flows.ui", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]
    ui = start_ui(cmd, root, env)
    try:
        pids = dict(line.split("=", 1) for line in (root / ".ui.env").read_text().splitlines())["UI_PIDS"]
        prefect_pid, mlflow_pid = map(int, pids.split(","))
        assert listening(prefect_port) == {"127.0.0.1"} and listening(mlflow_port) == {"127.0.0.1"}
        mlflow_tree = descendants(mlflow_pid)
        assert len(mlflow_tree) <= 2, f"MLflow server runs {len(mlflow_tree) + 1} processes"
    finally:
        ui.send_signal(signal.SIGINT)  # Ctrl-C
        ui.wait(timeout=60)
    assert not (root / ".ui.env").exists()
    for pid in (prefect_pid, mlflow_pid, *mlflow_tree):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_make_ui_off_loopback_needs_a_secret_and_then_both_servers_ask_for_it(tmp_path):
    """`make ui HOST=0.0.0.0`: without RLHF_UI_AUTH one line, exit 2, nothing started; with it, requests without
    the credentials are refused by both servers, and a stage run (reading .ui.env) reports to both."""
    import httpx
    import mlflow

    root = make_project(tmp_path / "proj")
    prefect_port, mlflow_port = free_port(), free_port()
    env = project_env(root, PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)
    env.pop("RLHF_UI_AUTH", None)
    cmd = [sys.executable, "-m", "flows.ui", "--host", "0.0.0.0", "--prefect-port", str(prefect_port)]
    cmd += ["--mlflow-port", str(mlflow_port)]
    refused = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "RLHF_UI_AUTH" in refused.stderr
    assert not (root / ".ui.env").exists() and not listening(prefect_port) and not listening(mlflow_port)

    user, password = "team", "a long secret"
    env["RLHF_UI_AUTH"] = f"{user}:{password}"
    ui = start_ui(cmd, root, env)
    try:
        assert (root / ".ui.env").stat().st_mode & 0o077 == 0  # the credentials: the owner's alone
        assert listening(prefect_port) == {"00000000"} and listening(mlflow_port) == {"00000000"}  # 0.0.0.0
        prefect_api, mlflow_uri = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
        search = f"{mlflow_uri}/api/2.0/mlflow/experiments/search"
        for auth in (None, (user, "wrong password")):
            assert httpx.post(f"{prefect_api}/flow_runs/filter", json={}, auth=auth).status_code == 401
            assert httpx.get(search, params={"max_results": 10}, auth=auth).status_code == 401
        assert httpx.post(f"{prefect_api}/flow_runs/filter", json={}, auth=(user, password)).status_code == 200

        stage_env = {k: v for k, v in project_env(root).items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
        dvc = str(Path(sys.executable).parent / "dvc")
        run = subprocess.run(
            [dvc, "repro", "sft"], cwd=root, env=stage_env, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stderr[-3000:]
        flow_runs = httpx.post(f"{prefect_api}/flow_runs/filter", json={}, auth=(user, password)).json()
        assert [r["state_type"] for r in flow_runs] == ["COMPLETED"] * 3  # base, prepare, sft
        mlflow.set_tracking_uri(mlflow_uri)

        os.environ |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
        try:
            runs = mlflow.search_runs(experiment_names=["rlhf-pipeline"])
        finally:
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(key)
            mlflow.set_tracking_uri(None)
        assert list(runs["tags.dvc_stage"]) == ["sft"]
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=60)
    assert not (root / ".ui.env").exists()
