"""Thin Prefect flows, one per pipeline stage (`python -m flows.<stage>`); the work lives in tasks/.

Prefect settings are defaulted here, before prefect is imported: its home (and with no PREFECT_API_URL,
the ephemeral server's SQLite database) stays inside the project, and telemetry is off (offline, and
its heartbeat locks SQLite). Set PREFECT_API_URL to report to a real server instead.
"""
import os

from tasks.common import ROOT

os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
