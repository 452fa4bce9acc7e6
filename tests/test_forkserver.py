"""The suite's fork server (tests/forkserver.py) behaves as a fresh `python -m flows.<module>` would: argv,
directory, environment, stdin/stdout/stderr and exit status are the command's; a signal reaches the module; a
client killed outright takes its module with it. Every stage test relies on this."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import forkserver, project_env

PROBE = """
import os, sys, time
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("PROBE_VALUE"), "stdin", sys.stdin.read())
print("to stderr", file=sys.stderr)
if sys.argv[1] == "sleep":
    open("pid", "w").write(str(os.getpid()))
    time.sleep(120)
if sys.argv[1] == "torch":
    print("torch preloaded:", "torch" in sys.modules)
    import flows
    print("flows from", flows.__file__)
sys.exit(int(sys.argv[2]))
"""

pytestmark = [
    pytest.mark.slow,  # starts the server (its imports take seconds)
    pytest.mark.skipif(
        os.environ.get("RLHF_TEST_FORKSERVER") == "0" or not sys.platform.startswith("linux"),
        reason="the fork server is off (RLHF_TEST_FORKSERVER=0, or not Linux)",
    ),
]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows/__init__.py").write_text("")
    (tmp_path / "flows/probe.py").write_text(PROBE)
    return tmp_path


def listening(within: float = 120) -> bool:
    """The fork server takes its socket once its imports are done (until then `python` is the real one)."""
    import socket

    path = forkserver()["env"]["RLHF_TEST_FORKSERVER_SOCKET"]
    deadline = time.time() + within
    while time.time() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(path) == 0:
                return True
        time.sleep(0.2)
    return False


def start(project, *args, **kwargs):
    assert listening(), "the fork server did not start"
    env = project_env(project, PROBE_VALUE="from the client")
    return subprocess.Popen(
        ["python", "-m", "flows.probe", *args], cwd=project, env=env, text=True, start_new_session=True, **kwargs
    )


def test_a_module_gets_the_commands_argv_directory_environment_stdio_and_exit_status(project):
    proc = start(project, "torch", "3", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate("some input", timeout=60)
    assert proc.returncode == 3
    assert f"argv ['torch', '3'] cwd {project} env from the client stdin some input" in out
    assert "torch preloaded: True" in out and f"flows from {project / 'flows/__init__.py'}" in out
    assert err == "to stderr\n"


def wait_for_pid(project) -> int:
    deadline = time.time() + 60
    while time.time() < deadline:
        if (project / "pid").exists() and (project / "pid").read_text():
            return int((project / "pid").read_text())
        time.sleep(0.1)
    raise AssertionError("the module never started")


def gone(pid: int, within: float = 10) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_signal_to_the_client_reaches_the_module_and_is_its_status(project):
    proc = start(project, "sleep", "0", stdout=subprocess.DEVNULL)
    module = wait_for_pid(project)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert gone(module)


def test_a_client_killed_outright_takes_its_module_with_it(project):
    proc = start(project, "sleep", "0", stdout=subprocess.DEVNULL)
    module = wait_for_pid(project)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert gone(module)
