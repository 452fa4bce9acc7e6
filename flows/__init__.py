"""Thin Prefect flows, one per pipeline stage (`python -m flows.<stage>`); the work lives in tasks/.

Prefect settings are defaulted here, before prefect is imported: its home (and with no PREFECT_API_URL,
the ephemeral server's SQLite database) stays inside the project, and telemetry is off (offline, and
its heartbeat locks SQLite). Set PREFECT_API_URL to report to a real server instead.
"""

import os
import shlex

from flows.paths import PREFECT_HOME, UI_ENV

os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _ui_env() -> None:
    """While `make ui` runs, .ui.env names its Prefect and MLflow servers: report there (unless the
    environment already says otherwise). A file left behind by a killed `make ui` is ignored."""
    if not UI_ENV.exists():
        return
    env = dict(item.split("=", 1) for item in shlex.split(UI_ENV.read_text()) if "=" in item)
    try:
        for pid in env.get("UI_PIDS", "").split(","):
            os.kill(int(pid), 0)
    except (ValueError, OSError):
        return
    keys = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME")
    for key in (*keys, "MLFLOW_TRACKING_PASSWORD"):
        if key in env:
            os.environ.setdefault(key, env[key])


_ui_env()
