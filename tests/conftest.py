"""Shared fixtures: a throw-away copy of the project on the tiny profile, and a real Prefect server.

Nothing here mocks a component of ours: DVC, Prefect and MLflow run for real, on 127.0.0.1, in a temp
directory, bounded in time and stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the in-process tests too (before torch is imported): see project_env

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Never copied into a test project, besides what git ignores: the developer's own results and DVC's lock (a test
# project starts before any run; the committed metrics and plots are results, not inputs).
NOT_INPUTS = ("metrics/", "plots/", "dvc.lock")


def project_files(src: Path) -> list[str]:
    """The files a test project starts from: git's tracked and not-ignored ones, so that nothing a run of the
    developer's wrote (outputs, labels.db, mlflow.db, .ui.env, .venv, DVC's cache) leaks into a test."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=src,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in dict.fromkeys(out.split("\0")) if f and not f.startswith(NOT_INPUTS) and (src / f).is_file()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_FORKSERVER: dict = {}


def forkserver() -> dict:
    """PATH and environment that send this worker's `python -m flows.*` to its fork server (tests/forkserver.py),
    started on first use and killed at exit; {} with RLHF_TEST_FORKSERVER=0 or off Linux (pidfds; fork after torch
    and the Objective-C runtime do not mix on macOS): every stage a fresh interpreter."""
    if os.environ.get("RLHF_TEST_FORKSERVER", "1") == "0" or not sys.platform.startswith("linux"):
        return {}
    if not _FORKSERVER:
        import atexit
        import tempfile

        from tests.forkserver import client_script

        home = Path(tempfile.mkdtemp(prefix="rlhf-forkserver-"))
        sock, shim = home / "socket", home / "bin"
        shim.mkdir()
        (shim / "python").write_text(client_script(sys.executable))
        (shim / "python").chmod(0o755)
        try:  # a temp dir mounted noexec: no fork server, fresh interpreters
            subprocess.run([str(shim / "python"), "-c", "pass"], check=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            shutil.rmtree(home, ignore_errors=True)
            os.environ["RLHF_TEST_FORKSERVER"] = "0"
            return {}
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
        proc = subprocess.Popen(  # not waited for: until it listens (its imports take seconds), `python` is python
            [sys.executable, str(REPO / "tests/forkserver.py"), str(sock)],
            cwd=home,
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(lambda: (os.killpg(proc.pid, signal.SIGKILL), shutil.rmtree(home, ignore_errors=True)))
        _FORKSERVER.update(bin=str(shim), env={"RLHF_TEST_FORKSERVER_SOCKET": str(sock)})
    return _FORKSERVER


def project_env(root: Path, **extra) -> dict:
    env = dict(os.environ)
    # One torch thread per process: the tiny model gains nothing from two, and with two xdist workers (plus
    # two-process DDP and two queued experiments at once) two threads each would oversubscribe 2 cores.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(
        PATH=os.pathsep.join(filter(None, [forkserver().get("bin"), str(BIN), env.get("PATH", "")])),
        PYTHONPATH=str(root),
        DVC_NO_ANALYTICS="1",
        PREFECT_HOME=str(root / ".prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
    )
    env.pop("RLHF_ROOT", None)
    env.update(forkserver().get("env", {}))
    env.update(extra)
    return env


def make_project(dest: Path, profile: str | None = "tiny", src: Path = REPO) -> Path:
    """Copy the project's files (project_files: never a run's outputs) to dest as a fresh git + DVC repo on the
    given profile."""
    for rel in project_files(src):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
    env = project_env(dest)
    run = lambda *cmd: subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True, timeout=120)  # noqa
    run("git", "init", "-q")
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "test project")
    if profile:
        run(sys.executable, "-m", "flows.profile", profile)
    return dest


def set_params(root: Path, **sections) -> None:
    """Update sections of a project's params.yaml ({section: {key: value}})."""
    p = yaml.safe_load((root / "params.yaml").read_text())
    for sec, over in sections.items():
        p[sec] = {**p[sec], **over}
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def run_cmd(root: Path, *cmd, timeout=600, check=True, **env_extra) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=root, env=project_env(root, **env_extra), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def start_server(cmd: list[str], health_url: str, home: Path, env: dict, timeout: float = 120):
    """Start a server in its own process group; return it once health_url answers 200 (else kill it)."""
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(health_url, timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {(home / 'server.log').read_text()[-2000:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"{' '.join(cmd[:3])} did not become healthy in {timeout:.0f} s")


def stop_server(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by chromedriver (.ci/run installs both); quit at the end."""
    from selenium import webdriver

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "needs Debian's chromium and chromium-driver (apt-get install; .ci/run does)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server on 127.0.0.1 (SQLite), shared by the session; stopped by PID at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = dict(
        os.environ,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_API_URL="",
    )
    url = f"http://127.0.0.1:{port}/api"
    env["PREFECT_UI_API_URL"] = url  # where the UI in a browser finds the API (its default is port 4200)
    proc = start_server(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        f"{url}/health",
        home,
        env,
        timeout=90,
    )
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, prefect_server):
    """The tiny-profile project after `dvc repro sft` (base -> prepare -> sft), run once per session."""
    root = make_project(tmp_path_factory.mktemp("tiny") / "proj")
    t0 = time.time()
    run_cmd(root, "dvc", "repro", "sft", PREFECT_API_URL=prefect_server)
    return {"root": root, "seconds": time.time() - t0, "prefect_api": prefect_server}


@pytest.fixture(scope="session")
def full_pipeline(tmp_path_factory, prefect_server):
    """A fresh tiny project after a whole `dvc repro` (the gate letting any policy through, outputs relinked as
    `make repro` does, committed), and a copy of it as it was then ("snapshot"), which test_rounds_run.py starts
    its round 2 from: both files run on one xdist worker (pytest_xdist_make_scheduler below)."""
    root = make_project(tmp_path_factory.mktemp("full") / "proj")
    # any policy through: the tiny model's judges agree with its labels only by chance, by construction
    set_params(root, champion={"max_kl": 100.0, "min_win_rate": 0.0, "alias": "champion", "min_judge_agreement": None})
    t0 = time.time()
    run_cmd(root, "dvc", "repro", PREFECT_API_URL=prefect_server)
    seconds = time.time() - t0
    run_cmd(root, "dvc", "checkout", "--relink")  # as `make repro` does
    run_cmd(root, "git", "add", "-A")
    run_cmd(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny run")
    snapshot = root.parent / "snapshot"
    shutil.copytree(root, snapshot, symlinks=True)  # git, DVC cache and MLflow store included
    return {"root": root, "seconds": seconds, "api": prefect_server, "snapshot": snapshot}


# Files that share a worker (and so the session fixtures they both use): {file: the file whose work unit it joins}.
SAME_WORKER = {"tests/test_rounds_run.py": "tests/test_pipeline.py"}  # full_pipeline: one whole repro, not two


@pytest.hookimpl(optionalhook=True)  # an xdist hook: `make test-fast` runs without xdist
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, except that the files in SAME_WORKER go to one worker as one unit (in COST_ORDER)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileJoined(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SAME_WORKER.get(file, file)

    return LoadFileJoined(config, log)


# The suite runs on 2 xdist workers, one test file each at a time (pyproject: -n 2 --dist loadfile,
# --no-loadscope-reorder; SAME_WORKER above joins files). Files go out in this order, longest first: the pipeline
# file's chain (a fresh repro, the frontier, seeds, the deployed pipeline, then round 2 on a copy of that repro)
# on one worker, the rest filling in on the other; unlisted files
# follow in their usual order (the per-file seconds behind this order: docs/results.md).
# ppo_stage runs sample and rm itself when no earlier file on its worker did, so it goes early too.
COST_ORDER = [
    "test_pipeline",
    "test_rounds_run",  # three rounds in a row on a copy of the tiny project
    "test_distributed",
    "test_ppo_stage",
    "test_group_stages",
    "test_bad_inputs",
    "test_label_pause",  # what pipeline's worker takes when two of its tests are left (~7 min in): no tiny model
    "test_reward_stage",
    "test_dpo_rto",
    "test_resume",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(COST_ORDER)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: keeps order within


def pytest_terminal_summary(terminalreporter):
    """Print the speed measurements tests record (record_property("timing", ...)): measured, not asserted."""
    lines = [
        v
        for rep in terminalreporter.stats.get("passed", [])
        if rep.when == "call"
        for k, v in getattr(rep, "user_properties", [])
        if k == "timing"
    ]
    if lines:
        terminalreporter.section("timings (measured, not asserted)")
        for line in lines:
            terminalreporter.write_line(line)
