"""Pipeline overhead: the same SFT step loop run bare vs inside a Prefect flow (against a real, temporary
Prefect server) with an MLflow run (SQLite store) and per-step MLflow logging — what a stage adds around
its training loop. And the time of a no-op `dvc repro` (every stage up to date).

    python -m bench.overhead <model dir> <steps>     -> one JSON line
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.dpo import peak_rss_mb

DVC = str(Path(sys.executable).parent / "dvc")


def sft_items(tok, n: int) -> list[dict]:
    from flows.paths import ROOT
    from tasks.lm.batching import encode_example
    from tasks.runtime.files import read_jsonl

    rows = read_jsonl(ROOT / "data/reviews.jsonl")[:n]
    return [
        encode_example(" ".join(r["text"].split()[:5]), " " + " ".join(r["text"].split()[5:]), tok, 96) for r in rows
    ]


def loop(model_dir: str, steps: int, on_step=None) -> float:
    """The SFT stage's work, bare: load the model, encode the data, run its training loop (tasks.train.loop.fit
    with the SFT loss). Timed whole, like the flow below, so the two differ only by what wraps the work."""

    from tasks.lm.batching import collate
    from tasks.lm.models import load_lm
    from tasks.sections.training import SFTConfig
    from tasks.train.loop import fit
    from tasks.train.sft import lm_loss

    t0 = time.perf_counter()
    model, tok = load_lm(Path(model_dir))
    cfg = SFTConfig(max_steps=steps, batch_size=8, lr=5e-5, max_length=96, checkpoint_every=0)
    items = sft_items(tok, 8 * steps)
    fit(
        model,
        items,
        partial(collate, pad_id=tok.pad_token_id),
        lm_loss,
        cfg,
        hooks={"on_step": on_step, "desc": "bench sft"},
    )
    return time.perf_counter() - t0


def through_flow(model_dir: str, steps: int) -> float:
    """The same loop as a Prefect task in a Prefect flow, inside an MLflow stage run, logging every step."""
    from prefect import flow, task

    from flows import tracking
    from flows.common import TRACKING_URI, step_logger
    from flows.paths import MLARTIFACTS, ROOT

    @task(name="train")
    def train():
        return loop(model_dir, steps, on_step=step_logger("sft"))

    @flow(name="bench-sft")
    def stage():
        with tracking.stage_run("bench-sft", "bench", {"steps": steps}, TRACKING_URI, MLARTIFACTS, ROOT):
            return train()

    t0 = time.perf_counter()
    stage()
    return time.perf_counter() - t0


def noop_dvc_repro(repo: Path) -> dict:
    """`dvc repro` where `dvc status` says nothing changed (else it would train: then not measured)."""
    status = subprocess.run([DVC, "status", "--json"], cwd=repo, capture_output=True, text=True)
    if status.returncode or json.loads(status.stdout or "{}"):
        return {"skipped": f"{repo.name}: pipeline not up to date (dvc status), so a repro would not be a no-op"}
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([DVC, "repro"], cwd=repo, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return {"repo": repo.name, "seconds": sorted(times), "median_s": sorted(times)[1]}


def wrapper_cost(model_dir: str, step_counts=(4, 40), reps: int = 3) -> dict:
    """What the wrapper itself costs, measured where compute noise is small (the tiny model): the flow-minus-
    bare difference at two step counts gives a fixed cost per stage and a cost per logged step."""
    diff = {
        n: sorted(through_flow(model_dir, n) - loop(model_dir, n) for _ in range(reps))[reps // 2] for n in step_counts
    }
    lo, hi = step_counts
    per_step = (diff[hi] - diff[lo]) / (hi - lo)
    return {"median_diff_s": diff, "fixed_s": diff[lo] - lo * per_step, "per_step_s": per_step}


if __name__ == "__main__":
    from prefect.testing.utilities import prefect_test_harness

    import flows  # noqa: F401  (Prefect's settings: telemetry off, before prefect is imported)

    model_dir, steps, repo, tiny_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        bare, flowed = [], []
        with prefect_test_harness(server_startup_timeout=120):  # a real temporary server (its start not timed)
            loop(model_dir, 2)  # warm-ups: first-call costs are not overhead
            through_flow(model_dir, 2)
            for _ in range(3):  # interleaved, so drift hits both sides alike
                bare.append(loop(model_dir, steps))
                flowed.append(through_flow(model_dir, steps))
            loop(tiny_dir, 2)
            through_flow(tiny_dir, 2)
            wrapper = wrapper_cost(tiny_dir)
    b, f = min(bare), min(flowed)
    # the default SFT stage (24 steps) at this model's bare per-step time, with the wrapper's measured cost
    stage_s = b / steps * 24
    print(
        "BENCH "
        + json.dumps(
            {
                "steps": steps,
                "bare_s": bare,
                "flow_mlflow_s": flowed,
                "overhead_s": f - b,
                "overhead_pct": 100 * (f - b) / b,
                "overhead_pct_paired": [100 * (y - x) / x for x, y in zip(bare, flowed)],
                "overhead_pct_paired_median": sorted(100 * (y - x) / x for x, y in zip(bare, flowed))[1],
                "wrapper_tiny": wrapper,
                "default_sft_stage_pct": 100 * (wrapper["fixed_s"] + 24 * wrapper["per_step_s"]) / stage_s,
                "noop_dvc_repro": noop_dvc_repro(repo),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
