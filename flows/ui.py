"""`make ui`: a Prefect server and an MLflow server on 127.0.0.1 (SQLite backends), until Ctrl-C.

While they run, `.ui.env` holds their URLs and PIDs; every stage, `dvc repro` and `make worker` read it
(flows/__init__.py) and report to these servers instead of an ephemeral Prefect server and the SQLite file.
Ctrl-C (or SIGTERM) stops both servers by their process group and removes `.ui.env`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.paths import MLARTIFACTS, MLFLOW_DB, ROOT, UI_ENV

BIN = Path(sys.executable).parent


def wait_healthy(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the {what} server exited (code {proc.returncode}); see .ui-{what}.log")
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: the {what} server did not answer {url} within {timeout:.0f} s")


def start(prefect_port: int, mlflow_port: int) -> list[subprocess.Popen]:
    env = dict(
        os.environ,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # its job workers (7 processes) serve no UI we use
        PREFECT_API_URL="",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = []
    with open(ROOT / ".ui-prefect.log", "w") as plog, open(ROOT / ".ui-mlflow.log", "w") as mlog:
        procs.append(
            subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                env=dict(env, PREFECT_UI_API_URL=f"http://127.0.0.1:{prefect_port}/api"),  # the UI's API (else 4200)
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
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
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
    a = ap.parse_args()
    procs = start(a.prefect_port, a.mlflow_port)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        prefect_api = f"http://127.0.0.1:{a.prefect_port}/api"
        mlflow_uri = f"http://127.0.0.1:{a.mlflow_port}"
        wait_healthy(f"{prefect_api}/health", procs[0], "prefect")
        wait_healthy(f"{mlflow_uri}/health", procs[1], "mlflow")
        UI_ENV.write_text(
            f"PREFECT_API_URL={prefect_api}\nMLFLOW_TRACKING_URI={mlflow_uri}\nUI_PIDS={procs[0].pid},{procs[1].pid}\n"
        )
        print(
            f"Prefect UI  http://127.0.0.1:{a.prefect_port}\nMLflow UI   {mlflow_uri}\n"
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
