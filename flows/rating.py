"""What round r's eval adds for iterated RLHF (params.yaml: rounds): its per-prompt scores by the head-to-head
judge kept as an output (data/eval/scores.json, data/rounds/<r>/eval/scores.json), and, from round 2 on, one
rating of SFT and every policy of rounds 1..r (tasks/eval/across_rounds.py) -> metrics/rounds/<r>/rating.json,
plots/rounds/<r>/rating.png and the eval run in MLflow."""

import json

from flows.common import write_metrics
from flows.paths import ROOT, ROUND, STAGE_PLOTS, in_round
from tasks import config
from tasks.eval.across_rounds import rating_across, rating_figure, rating_table
from tasks.runtime.errors import PipelineError
from tasks.runtime.files import write_json

SCORES = "scores.json"


def scores_file(r: int = ROUND):
    return in_round(ROOT / "data", r) / "eval" / SCORES


def keep_scores(per_prompt: dict) -> None:
    write_json(scores_file(), per_prompt)


def rate_rounds(params: dict) -> dict | None:
    """From round 2 on: the rating across rounds 1..ROUND, written, drawn, logged and printed."""
    if ROUND == 1:
        return None
    import mlflow

    per_round = {}
    for r in range(1, ROUND + 1):
        path = scores_file(r)
        if not path.exists():
            raise PipelineError(f"{path.relative_to(ROOT)} is missing: run dvc repro (round {r}'s eval)")
        per_round[r] = json.loads(path.read_text())
    cfg = config.load("eval", params)
    result = rating_across(per_round, cfg.bootstrap_resamples, cfg.seed, cfg.ci_level)
    write_metrics("rating", result)
    png = STAGE_PLOTS / "rating.png"
    rating_figure(result, png)
    mlflow.log_artifact(str(png))
    mlflow.log_metrics({f"rating/{n.replace(' ', '_')}": m["elo"] for n, m in result["ratings"].items()})
    print(f"rating across rounds 1..{ROUND}:\n" + rating_table(result, cfg.ci_level))
    return result
