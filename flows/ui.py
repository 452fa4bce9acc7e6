"""`make ui`: a Prefect server and an MLflow server (SQLite backends), until Ctrl-C.

    make ui                                        # both on 127.0.0.1: this machine only
    RLHF_UI_AUTH=user:password make ui HOST=0.0.0.0   # reachable by a team, behind HTTP basic auth

Bound to anything but loopback they start only with a secret in RLHF_UI_AUTH ("user:password"): Prefect with
it as its auth string (PREFECT_SERVER_API_AUTH_STRING), MLflow as its basic-auth app's admin (mlflow[auth]; the
other users are MLflow's to manage). With the secret set, loopback servers use it too.

While they run, `.ui.env` (mode 600) holds their URLs, PIDs and, with auth, the client settings
(PREFECT_API_AUTH_STRING, MLFLOW_TRACKING_USERNAME / _PASSWORD); every stage, `dvc repro` and `make worker` read it
(flows/__init__.py) and report to these servers instead of an ephemeral Prefect server and the SQLite file.
Ctrl-C (or SIGTERM) stops both servers by their process group and removes `.ui.env`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.paths import MLARTIFACTS, MLFLOW_DB, ROOT, UI_ENV

BIN = Path(sys.executable).parent
AUTH = "RLHF_UI_AUTH"  # user:password; required off loopback
AUTH_DIR = ROOT / ".ui-auth"  # MLflow's basic-auth config and user database


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def credentials(host: str) -> tuple[str, str] | None:
    """(user, password) from RLHF_UI_AUTH; None without it (loopback only: one line and exit 2 otherwise)."""
    secret = os.environ.get(AUTH, "")
    if not secret:
        if not loopback(host):
            print(
                f"error: make ui HOST={host} would let anyone on the network in: set {AUTH}=user:password "
                "(Prefect's auth string and MLflow's basic-auth admin)",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return None
    user, sep, password = secret.partition(":")
    if not sep or not user or len(password) < 8:
        print(f"error: {AUTH} must be user:password with a password of 8 or more characters", file=sys.stderr)
        raise SystemExit(2)
    return user, password


def wait_healthy(url: str, proc: subprocess.Popen, what: str, auth=None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the {what} server exited (code {proc.returncode}); see .ui-{what}.log")
        try:
            if urllib.request.urlopen(request, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: the {what} server did not answer {url} within {timeout:.0f} s")


def mlflow_auth_config(user: str, password: str) -> Path:
    """MLflow's basic-auth app config (mode 600): this admin, its own user database, no access without a login."""
    AUTH_DIR.mkdir(exist_ok=True, mode=0o700)
    ini = AUTH_DIR / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{AUTH_DIR / 'users.db'}\nadmin_username = {user}\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    ini.chmod(0o600)
    return ini


def start(prefect_port: int, mlflow_port: int, host: str = "127.0.0.1", auth=None) -> list[subprocess.Popen]:
    env = dict(
        os.environ,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # its job workers (7 processes) serve no UI we use
        PREFECT_API_URL="",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    prefect_env = dict(
        env, PREFECT_UI_API_URL=f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{prefect_port}/api"
    )
    mlflow_app = []
    if auth:
        prefect_env["PREFECT_SERVER_API_AUTH_STRING"] = ":".join(auth)
        env = dict(env, MLFLOW_AUTH_CONFIG_PATH=str(mlflow_auth_config(*auth)))
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))  # CSRF signing, per start
        mlflow_app = ["--app-name", "basic-auth"]
    procs = []
    with open(ROOT / ".ui-prefect.log", "w") as plog, open(ROOT / ".ui-mlflow.log", "w") as mlog:
        procs.append(
            subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", host, "--port", str(prefect_port)],
                env=prefect_env,  # PREFECT_UI_API_URL: the UI's API (else port 4200)
                stdout=plog,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--host",
                    host,
                    "--port",
                    str(mlflow_port),
                    *mlflow_app,
                    "--backend-store-uri",
                    f"sqlite:///{MLFLOW_DB}",
                    "--default-artifact-root",
                    MLARTIFACTS.as_uri(),
                    "--workers",
                    "1",
                ],
                env=env,
                stdout=mlog,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    UI_ENV.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefect-port", type=int, default=4200)
    ap.add_argument("--mlflow-port", type=int, default=5000)
    ap.add_argument("--host", default="127.0.0.1", help="address both servers bind (off loopback: RLHF_UI_AUTH)")
    a = ap.parse_args()
    auth = credentials(a.host)
    procs = start(a.prefect_port, a.mlflow_port, a.host, auth)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        prefect_api = f"http://127.0.0.1:{a.prefect_port}/api"
        mlflow_uri = f"http://127.0.0.1:{a.mlflow_port}"
        wait_healthy(f"{prefect_api}/health", procs[0], "prefect", auth)
        wait_healthy(f"{mlflow_uri}/health", procs[1], "mlflow", auth)
        settings = {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_uri}
        if auth:
            settings |= {"PREFECT_API_AUTH_STRING": ":".join(auth), "MLFLOW_TRACKING_USERNAME": auth[0]}
            settings |= {"MLFLOW_TRACKING_PASSWORD": auth[1]}
        settings["UI_PIDS"] = f"{procs[0].pid},{procs[1].pid}"
        UI_ENV.touch(mode=0o600)
        UI_ENV.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in settings.items()))  # `. .ui.env` reads it
        print(
            f"Prefect UI  http://{a.host}:{a.prefect_port}\nMLflow UI   http://{a.host}:{a.mlflow_port}"
            f"{' (basic auth: ' + auth[0] + ')' if auth else ''}\n"
            f"The pipeline reports to them while this runs ({UI_ENV.name}); in another shell:\n"
            f"  export PREFECT_API_URL={prefect_api} MLFLOW_TRACKING_URI={mlflow_uri}\n"
            f"Ctrl-C stops both.",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("error: a server exited; stopping the other", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping the Prefect and MLflow servers")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
