"""Where the project keeps things. Flows and entry scripts own paths; tasks receive them as arguments."""

import os
from pathlib import Path

ROOT = Path(os.environ.get("RLHF_ROOT", Path(__file__).resolve().parent.parent))
PARAMS = ROOT / "params.yaml"
PROFILES = ROOT / "profiles"
MODELS = ROOT / "models"
PREPARED = ROOT / "data" / "prepared"
SAMPLES = ROOT / "data" / "samples"  # the sample stage's completions (and a simulated/dataset labeler's pairs)
COMPARISONS = ROOT / "data" / "comparisons"  # the labels stage's: the pairs rm and dpo train on
PAIRS = COMPARISONS / "pairs.jsonl"
HELDOUT_PAIRS = COMPARISONS / "heldout.jsonl"  # eval.heldout_share of the prompts: heldout_rm's and eval's only
EVAL_SFT = ROOT / "data" / "eval_sft"  # SFT's side of every evaluation (samples, scores per judge), cached by DVC
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"
CHECKPOINTS = ROOT / ".checkpoints"
BASE_CACHE = ROOT / ".cache" / "base"
MLFLOW_DB = ROOT / "mlflow.db"
MLARTIFACTS = ROOT / "mlartifacts"
PREFECT_HOME = ROOT / ".prefect"
UI_ENV = ROOT / ".ui.env"


LABELS_HOME = "RLHF_LABELS_HOME"  # set for queued DVC experiments: the checkout whose label store they read


def store_url(url: str) -> str:
    """A label store's SQLAlchemy URL: sqlite:///relative.db is the project's file (the checkout's, also for an
    experiment DVC runs in a temporary copy); every other URL as it is."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str(Path(os.environ.get(LABELS_HOME, ROOT)) / url[len(prefix) :])
    return url
