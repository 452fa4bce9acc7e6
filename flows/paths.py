"""Where the project keeps things. Flows and entry scripts own paths; tasks receive them as arguments."""

import os
from pathlib import Path

ROOT = Path(os.environ.get("RLHF_ROOT", Path(__file__).resolve().parent.parent))
PARAMS = ROOT / "params.yaml"
PROFILES = ROOT / "profiles"
MODELS = ROOT / "models"
PREPARED = ROOT / "data" / "prepared"
COMPARISONS = ROOT / "data" / "comparisons"
PAIRS = COMPARISONS / "pairs.jsonl"
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"
CHECKPOINTS = ROOT / ".checkpoints"
BASE_CACHE = ROOT / ".cache" / "base"
MLFLOW_DB = ROOT / "mlflow.db"
MLARTIFACTS = ROOT / "mlartifacts"
PREFECT_HOME = ROOT / ".prefect"
UI_ENV = ROOT / ".ui.env"
