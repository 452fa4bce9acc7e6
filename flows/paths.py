"""Where the project keeps things. Flows and entry scripts own paths; tasks receive them as arguments."""

import os
from pathlib import Path

ROOT = Path(os.environ.get("RLHF_ROOT", Path(__file__).resolve().parent.parent))
PARAMS = ROOT / "params.yaml"
PROFILES = ROOT / "profiles"
MODELS = ROOT / "models"
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"

# Iterated RLHF (params.yaml: rounds): a later round's stages run as `RLHF_ROUND=<r> python -m flows.<stage>` and
# keep their outputs under data/rounds/<r>, models/rounds/<r>, metrics/rounds/<r>, plots/rounds/<r>. Round 1 is
# the pipeline as it always was, with today's paths; base, sft and the judges (heldout_rm, judge) are shared.
ROUND = int(os.environ.get("RLHF_ROUND", "1"))
SHARED_MODELS = ("base", "sft", "heldout_rm", "judge")


def in_round(top: Path, r: int = ROUND) -> Path:
    """Round r's folder under models/, data/, metrics/ or plots/ (round 1: the folder itself)."""
    return top if r == 1 else top / "rounds" / str(r)


def model_dir(name: str, r: int = ROUND) -> Path:
    """Where a stage's model is: shared ones in models/, a round's RM and policies in models/rounds/<r>."""
    return MODELS / name if name in SHARED_MODELS else in_round(MODELS, r) / name


def samples_dir(r: int = ROUND) -> Path:
    """The sample stage's completions (and a simulated/dataset labeler's pairs) of round r."""
    return in_round(ROOT / "data", r) / "samples"


def comparisons_dir(r: int = ROUND) -> Path:
    """The labels stage's output of round r: the pairs rm and dpo train on, and the held-out ones."""
    return in_round(ROOT / "data", r) / "comparisons"


PREPARED = ROOT / "data" / "prepared"
# A team's own data files (prepare.sources, sample.dataset): a dependency of prepare and sample in dvc.yaml, so
# editing a file there reruns what read it. DVC cannot hash a path that only params.yaml names.
OWN_DATA = ROOT / "data" / "own"


SAMPLES = samples_dir()
COMPARISONS = comparisons_dir()
PAIRS = COMPARISONS / "pairs.jsonl"
HELDOUT_PAIRS = COMPARISONS / "heldout.jsonl"  # eval.heldout_share of the prompts: heldout_rm's and eval's only
EVAL_SFT = ROOT / "data" / "eval_sft"  # SFT's side of every evaluation (samples, scores per judge), cached by DVC
STAGE_METRICS = in_round(METRICS)  # metrics/<stage>.json of this round's stages (metrics/eval/: its evaluation)
STAGE_PLOTS = in_round(PLOTS)
CHECKPOINTS = in_round(ROOT / ".checkpoints")
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
