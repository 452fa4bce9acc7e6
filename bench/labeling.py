"""The labeling path end to end with simulated people: the sample stage's completions as tasks in a fresh label
store, the real page server (flows/label.py), N annotators ranking through its HTTP API, the labels stage's
export and report (tasks/label/export.py).

    python -m bench.labeling [completions.jsonl] [--annotators 2] [--tau 0.1] [--overlap 0.1] [--out result.json]

Each annotator ranks a task by gold/τ plus Gumbel noise (Plackett–Luce), so any two completions are ordered as
the simulated labeler orders a pair: P(a ≻ b) = σ((g(a) − g(b))/τ). That gives what the report should find —
people agreeing on a pair with probability p² + (1 − p)², the gold order with max(p, 1 − p) — next to what it
finds, with 95 % bootstrap intervals over tasks; and the page's submit latency.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def ranks_of(golds: list[float], tau: float, rng: np.random.Generator) -> list[int]:
    """A Plackett–Luce draw: rank 1 = best of gold/τ + Gumbel noise (ties impossible)."""
    noisy = np.array(golds) / max(tau, 1e-9) + rng.gumbel(size=len(golds))
    order = np.argsort(-noisy)
    ranks = np.empty(len(golds), dtype=int)
    ranks[order] = np.arange(1, len(golds) + 1)
    return ranks.tolist()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x > -700 else 0.0


def bootstrap_share(hits: np.ndarray, totals: np.ndarray, seed: int = 0, resamples: int = 2000) -> list[float]:
    """95 % interval of Σhits/Σtotals, tasks resampled (pairs of one task are not independent)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(hits), size=(resamples, len(hits)))
    shares = hits[idx].sum(1) / np.maximum(totals[idx].sum(1), 1)
    return np.quantile(shares, [0.025, 0.975]).tolist()


def main() -> None:
    import httpx

    from tasks.label.export import export, groups_from_completions
    from tasks.label.store import LabelStore, ranking_pairs
    from tasks.runtime.files import read_jsonl

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("completions", nargs="?", default="data/samples/completions.jsonl")
    ap.add_argument("--annotators", type=int, default=2, help="simulated people labeling at once")
    ap.add_argument("--tau", type=float, default=0.1, help="their noise (sample.tau's meaning)")
    ap.add_argument("--overlap", type=float, default=0.1, help="share of tasks labeled twice")
    ap.add_argument("--out", type=Path, default=None, help="write the result here (JSON)")
    args = ap.parse_args()
    groups = groups_from_completions(read_jsonl(Path(args.completions)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-labeling-"))
    url = f"sqlite:///{tmp / 'labels.db'}"
    store = LabelStore(url)
    store.add_tasks(groups, overlap=args.overlap, seed=0)
    with socket.socket() as sock:  # a free port on this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page = subprocess.Popen([sys.executable, "-m", "flows.label", "serve", "--store", url, "--port", str(port)])
    base = f"http://127.0.0.1:{port}/api"
    rng, latency, people = np.random.default_rng(0), [], [f"person{i}" for i in range(args.annotators)]
    try:
        for _ in range(600):
            try:
                httpx.get(f"{base}/progress", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        active, t0 = list(people), time.perf_counter()
        while active:
            for who in list(active):  # round-robin: the annotators label side by side
                task = httpx.get(f"{base}/next", params={"annotator": who}, timeout=30).json()["task"]
                if task is None:
                    active.remove(who)
                    continue
                golds = [c["gold"] for c in store_task(store, task["id"]).completions]
                body = {"annotator": who, "task_id": task["id"], "ranks": ranks_of(golds, args.tau, rng)}
                t = time.perf_counter()
                assert httpx.post(f"{base}/submit", json=body, timeout=30).status_code == 200
                latency.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    finally:
        page.terminate()
        page.wait(timeout=30)
    pairs, report = export(store, [g["prompt_id"] for g in groups])

    # what the report should find, from the gold scores alone, next to what it found, per task
    by_task = store_rankings(store)
    same, both, expect_same = [], [], []
    for task_id, rankings in by_task.items():
        if len(rankings) < 2:
            continue
        golds = [c["gold"] for c in store_task(store, task_id).completions]
        a, b = rankings[:2]
        pairs_ij = [(i, j) for i in range(len(golds)) for j in range(i + 1, len(golds))]
        same.append(sum((a[i] < a[j]) == (b[i] < b[j]) for i, j in pairs_ij))
        both.append(len(pairs_ij))
        p = [sigmoid((golds[i] - golds[j]) / args.tau) for i, j in pairs_ij]
        expect_same.append(sum(q * q + (1 - q) * (1 - q) for q in p))
    gold_hit, gold_n, expect_gold = [], [], []
    for task_id, rankings in by_task.items():
        golds = [c["gold"] for c in store_task(store, task_id).completions]
        for ranks in rankings:
            decided = [(w, lose) for w, lose in ranking_pairs(ranks) if golds[w] != golds[lose]]
            gold_hit.append(sum(golds[w] > golds[lose] for w, lose in decided))
            gold_n.append(len(decided))
            expect_gold.append(sum(sigmoid(abs(golds[w] - golds[lose]) / args.tau) for w, lose in decided))
    same, both, gold_hit, gold_n = map(np.array, (same, both, gold_hit, gold_n))
    result = {
        "command": "python -m bench.labeling " + " ".join(sys.argv[1:]),
        "cpu": cpu(),
        "completions": args.completions,
        "annotators": args.annotators,
        "tau": args.tau,
        "overlap": args.overlap,
        "report": report,
        "annotator_agreement_ci95": bootstrap_share(same, both),
        "annotator_agreement_expected": float(sum(expect_same) / max(both.sum(), 1)),
        "gold_agreement_ci95": bootstrap_share(gold_hit, gold_n),
        "gold_agreement_expected": float(sum(expect_gold) / max(gold_n.sum(), 1)),
        "submits": len(latency),
        "submit_latency_ms_median": 1000 * float(np.median(latency)),
        "submit_latency_ms_p95": 1000 * float(np.quantile(latency, 0.95)),
        "labels_per_s": len(latency) / wall,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def cpu() -> str:
    """The CPU's model name and its bf16 flags (speeds are only comparable on one machine)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16") if f in info})
    return f"{name} ({', '.join(flags) or 'no bf16 flags'})"


def store_task(store, task_id: int):
    from sqlalchemy.orm import Session

    from tasks.label.store import Task

    with Session(store.engine) as s:
        return s.get(Task, task_id)


def store_rankings(store) -> dict[int, list[list[int]]]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from tasks.label.store import Label

    out: dict[int, list[list[int]]] = {}
    with Session(store.engine) as s:
        for label in s.scalars(select(Label).where(Label.undone_at.is_(None), Label.ranks.is_not(None))):
            out.setdefault(label.task_id, []).append(label.ranks)
    return out


if __name__ == "__main__":
    main()
