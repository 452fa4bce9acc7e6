"""A fork server for the suite's stage processes: `python -m flows.<stage>` without 5-6 s of imports each.

Every stage is its own process (DVC runs a command per stage), and a tiny stage spends most of its CPU importing
torch, transformers and MLflow: ~250 stage processes make that most of the suite's time. This server imports
those libraries once; `python` on a test project's PATH is then a small client (client_script below) that hands
a `python -m flows.*` command — its argv, environment, working directory and stdin/stdout/stderr — to the
server, which forks a child that runs the module as `python -m` would, in a process group of its own. The client
waits for the child and exits with its status; a signal the client gets goes to the child's group, and a client
killed outright (SIGKILL) takes the child's group with it. Any other `python` command runs the real interpreter,
and so does every command until the server listens (after its imports: nobody waits for it).

What a child does not share with a fresh `python`: the libraries below are already imported (their import-time
reads of the environment were the server's: OMP_NUM_THREADS=1, as every test project's), and so is the server's
hash seed. Nothing of ours is imported before the fork (flows/ reads the project's paths at import). Off with
RLHF_TEST_FORKSERVER=0: every stage then starts a fresh interpreter.

    python tests/forkserver.py SOCKET   # serve until killed
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys

PRELOAD = (  # what a tiny stage spends its start on; never prefect (its settings are read at import)
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "pandas",
    "safetensors.torch",
)
HEADER = struct.Struct("!Q")  # the length of the JSON request that follows it


def client_script(python: str) -> str:
    """The `python` a test project's PATH starts with: `-m flows.*` goes to the server, the rest to python."""
    return f"""#!{python} -IS
import json, os, signal, socket, struct, sys
argv, sock_path = sys.argv, os.environ.get("RLHF_TEST_FORKSERVER_SOCKET", "")
if len(argv) < 3 or argv[1] != "-m" or not argv[2].startswith("flows.") or not sock_path:
    os.execv({python!r}, [{python!r}, *argv[1:]])
try:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sock_path)
except OSError:
    os.execv({python!r}, [{python!r}, *argv[1:]])
body = json.dumps({{"argv": argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}).encode()
fds = []
for fd in (0, 1, 2):  # a closed one is /dev/null, as the child would otherwise have none
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        fds.append(os.open(os.devnull, os.O_RDWR))
socket.send_fds(sock, [struct.pack("!Q", len(body))], fds)
sock.sendall(body)
f = sock.makefile("r")
child = int(f.readline())
def forward(sig, _):
    try:
        os.killpg(child, sig)
    except OSError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, forward)
status = f.readline().split()  # empty: the server went away
if status and status[0] == "signal":
    signal.signal(int(status[1]), signal.SIG_DFL)
    os.kill(os.getpid(), int(status[1]))
sys.exit(int(status[1]) if status else 1)
"""


def recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    msg, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    if len(msg) < HEADER.size:
        raise EOFError("a connection without a request (a probe)")
    (size,) = HEADER.unpack(msg)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("client went away")
        body += chunk
    return json.loads(body), fds


def run_module(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python -m MODULE ARGS` in the client's directory, environment and stdio."""
    os.setpgid(0, 0)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if unbuffered or os.isatty(1) else -1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *pythonpath, *BASE_PATH]
    import importlib
    import runpy
    import threading
    import traceback

    importlib.invalidate_caches()
    argv = request["argv"]  # ["-m", module, *args]
    sys.argv = [argv[1], *argv[2:]]
    code = 0
    try:
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # as interpreter shutdown does: join non-daemon threads, run atexit hooks, flush
        threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def manage(conn: socket.socket) -> None:
    """In a forked manager: start the child, tell the client its pid, then its status; kill it if the client dies."""
    try:
        request, fds = recv_request(conn)
    except EOFError:
        return
    child = os.fork()
    if child == 0:
        conn.close()
        run_module(request, fds)
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # also done in the child: whichever runs first
        os.setpgid(child, child)
    conn.sendall(f"{child}\n".encode())
    pidfd = os.pidfd_open(child)
    watched = [conn, pidfd]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if pidfd in ready:
            _, status = os.waitpid(child, 0)
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            reply = f"signal {sig}\n" if sig else f"exit {os.WEXITSTATUS(status)}\n"
            with contextlib.suppress(OSError):
                conn.sendall(reply.encode())
            return
        if not conn.recv(1):  # the client is gone (killed): so goes its stage
            watched = [pidfd]
            with contextlib.suppress(OSError):
                os.killpg(child, signal.SIGKILL)


def serve(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(1.0)
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            conn = None
        while True:  # reap the managers that ended
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if conn is None:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            server.close()
            try:
                manage(conn)
            finally:
                os._exit(0)
        conn.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    BASE_PATH = [p for p in sys.path[1:] if p]  # stdlib and site-packages (not this directory, not PYTHONPATH)
    serve(sys.argv[1])  # clients find no socket until now, and run the real interpreter
