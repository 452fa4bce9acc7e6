"""The benchmark harness: `python -m bench` (outside the unit tests; needs `pip install -e .[bench]` for TRL).

Runs each measurement in its own process, one after another (nothing else should run meanwhile), prints
a table and writes bench/results/<date>-<machine>.json:
  1. DPO training throughput, ours vs TRL's DPOTrainer: tiny model and SmolLM2-135M (bench/dpo.py)
  2. rollout tokens/s, ours vs plain model.generate at batch 8, 32, 64: SmolLM2-135M (bench/rollout.py)
  3. pipeline overhead: the SFT loop bare vs in a Prefect flow + MLflow run; a no-op dvc repro (bench/overhead.py)
  4. fp32 vs bf16 autocast: a scoring forward and a training step, SmolLM2-135M (bench/precision.py)
  5. GPU step time / MFU: only on a CUDA machine (none here: recorded as not measured)
The side-by-side `dvc repro` of two commits is its own command (an hour): python -m bench.repro OLD NEW;
its newest result is copied into this JSON as `repro`.

    python -m bench [--smollm models/base] [--repo .] [--quick] [--only dpo|rollout|overhead|precision]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.paths import ROOT


def child(module: str, *args) -> dict:
    """Run `python -m <module> args` and return the JSON it prints after 'BENCH '."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode or not line:
        raise RuntimeError(f"{module} {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[6:])


def tiny_model_dir(dest: Path) -> Path:
    """The tests' tiny random Llama (2 layers, hidden 64, a 512-token BPE trained on the corpus)."""
    from tasks.lm.base_model import ensure_pad_token, tiny_model
    from tasks.sections.data import BaseConfig

    model, tok = tiny_model(BaseConfig(model="tiny"), ROOT / "data/reviews.jsonl")
    ensure_pad_token(model, tok)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def machine() -> dict:
    import torch

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")))
    flags = next(
        (
            ln.split(":", 1)[1].split()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("flags")
        ),
        [],
    )
    return {
        "cpu": cpu,
        "cpu_flags": sorted(set(flags) & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}),
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**20, 1),
        "gpu": torch.cuda.is_available(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm", default=str(ROOT / "models/base"), help="SmolLM2-135M dir (the base stage's output)")
    ap.add_argument("--repo", default=str(ROOT), help="a DVC repo whose pipeline is up to date (no-op repro)")
    ap.add_argument("--quick", action="store_true", help="fewer steps and prompts (a smoke run, not for the record)")
    ap.add_argument(
        "--only",
        choices=["dpo", "rollout", "overhead", "precision"],
        help="rerun one part and update today's results JSON (the other parts kept as they were)",
    )
    a = ap.parse_args()
    q = a.quick
    out = ROOT / "bench/results" / f"{time.strftime('%Y-%m-%d')}-cpu{os.cpu_count()}{'-quick' if q else ''}.json"
    res = json.loads(out.read_text()) if a.only and out.exists() else {}
    t0 = time.time()
    res.update(machine=machine(), date=time.strftime("%Y-%m-%d %H:%M"))
    smollm = Path(a.smollm) if (Path(a.smollm) / "config.json").exists() else None
    run = lambda part: a.only in (None, part)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        models = {"tiny": tiny_model_dir(Path(tmp) / "tiny"), **({"smollm2-135m": smollm} if smollm else {})}
        if run("dpo"):
            res["dpo"] = {}
            for name, path in models.items():
                n, steps = (2, 3) if q else ((4, 8) if name == "tiny" else (2, 5))
                res["dpo"][name] = {side: child("bench.dpo", side, path, n, steps) for side in ("ours", "trl")}
        if run("rollout"):
            res["rollout"] = {
                "model": "smollm2-135m" if smollm else "tiny",
                **child("bench.rollout", smollm or models["tiny"], "8,32,64", 32 if q else 64),
            }
            res["rollout"]["batch8"] = batch8_ratios(res["rollout"]["rows"])
        if run("precision"):
            res["precision"] = {
                "model": "smollm2-135m" if smollm else "tiny",
                **child("bench.precision", smollm or models["tiny"]),
            }
        if run("overhead"):
            res["overhead"] = child("bench.overhead", smollm or models["tiny"], 3 if q else 8, a.repo, models["tiny"])
    side_by_side = sorted((ROOT / "bench/results").glob("*-repro-side-by-side.json"))
    if side_by_side:
        res["repro"] = {**json.loads(side_by_side[-1].read_text())["repro"], "from": side_by_side[-1].name}
    res["gpu"] = "not measured: no CUDA device on this machine (the device tool lent none to this session)"
    res["seconds" if not a.only else f"seconds_{a.only}"] = time.time() - t0
    print_table(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)} ({(time.time() - t0) / 60:.1f} min)")


def batch8_ratios(rows: list[dict]) -> dict:
    """At batch 8, tokens/s of ours with the configured sampler (ppo.rollout_precision) and with each copy,
    over plain fp32 `generate`."""
    from flows.common import read_params
    from tasks.runtime.device import cpu_bf16_native

    by = {r["side"]: r["tokens_per_s"] for r in rows if r["batch"] == 8}
    precision = read_params()["ppo"].get("rollout_precision", "fp32")
    if precision == "auto":  # as on a CPU run: bf16 where the CPU has bf16 units
        precision = "bf16" if cpu_bf16_native() else "fp32"
    default = "ours" if precision == "fp32" else f"ours_{precision}"
    return {
        "rollout_precision": precision,
        "ratio_vs_generate": by[default] / by["plain_generate"] if default in by else None,
        **{f"{side}_vs_generate": v / by["plain_generate"] for side, v in by.items() if side != "plain_generate"},
    }


def print_table(res: dict) -> None:
    print(f"\nmachine: {res['machine']}")
    if "dpo" in res:
        print_dpo(res["dpo"])
    if "rollout" in res:
        print_rollout(res["rollout"])
    if "overhead" in res:
        print_overhead(res["overhead"])
    if "precision" in res:
        p = res["precision"]
        print(
            f"\n4. bf16 autocast ({p['model']}, native bf16: {p['bf16_native']}): forward fp32/bf16 "
            f"{p['forward_ratio']:.2f}x, train step {p['train_step_ratio']:.2f}x"
        )
    if "repro" in res:
        r = res["repro"]
        print(
            f"   dvc repro side by side: old {r['old_s'] / 60:.1f} min, new {r['new_s'] / 60:.1f} min "
            f"(new/old {r['ratio']:.2f})"
        )
    print(f"\n5. GPU: {res['gpu']}")


def print_dpo(dpo: dict) -> None:
    print("\n1. DPO training step (sigmoid, beta 0.1, fp32; warm-up excluded)")
    print(
        f"{'model':14} {'side':5} {'pairs/step':>10} {'seqs/step':>9} {'median s':>9} {'min s':>7} "
        f"{'pairs/s med':>11} {'peak RSS MB':>11}"
    )
    for name, sides in dpo.items():
        for side, r in sides.items():
            print(
                f"{name:14} {side:5} {r['pairs_per_step']:>10} {r['sequences_per_step']:>9} {r['median_step_s']:>9.3f} "
                f"{r['min_step_s']:>7.3f} {r['pairs_per_s_median']:>11.1f} {r['peak_rss_mb']:>11.0f}"
            )
        o, t = sides["ours"], sides["trl"]
        print(
            f"{'':14} ours/TRL pairs/s: median {o['pairs_per_s_median'] / t['pairs_per_s_median']:.2f}x, "
            f"best {o['pairs_per_s_best'] / t['pairs_per_s_best']:.2f}x"
        )


def print_rollout(r: dict) -> None:
    print(f"\n2. Rollout ({r['model']}, {r['prompts']} prompts x {r['new_tokens']} new tokens, T = 1)")
    by = {(x["side"], x["batch"]): x["tokens_per_s"] for x in r["rows"]}
    for b in sorted({x["batch"] for x in r["rows"]}):
        print(
            f"batch {b:>3}: plain generate {by[('plain_generate', b)]:7.1f} tok/s, ours {by[('ours', b)]:7.1f} tok/s "
            f"({by[('ours', b)] / by[('plain_generate', b)]:.2f}x)"
        )
    top = max(x["batch"] for x in r["rows"])
    print(f"ours at batch {top} vs plain generate at batch 8: {by[('ours', top)] / by[('plain_generate', 8)]:.2f}x")
    for side in sorted({x["side"] for x in r["rows"]} - {"plain_generate", "ours"}):
        print(f"{side} at batch 8: {by[(side, 8)] / by[('plain_generate', 8)]:.2f}x plain generate")
    for p, kl in r.get("copy_kl_per_token", {}).items():
        print(f"{p} sampling copy: mean KL to the fp32 policy {kl:.4f} nats/token")
    prof = r["profile_batch8"]
    print(
        f"batch-8 profile: matrix multiplies {100 * prof['matmul_share']:.0f} % of CPU time; top ops: "
        + ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in prof["ops"][:4])
    )


def print_overhead(o: dict) -> None:
    print(
        f"\n3. Overhead: SFT stage work (load + {o['steps']} steps) bare {min(o['bare_s']):.1f} s, "
        f"in Prefect flow + MLflow "
        f"{min(o['flow_mlflow_s']):.1f} s -> {o['overhead_s']:+.2f} s ({o['overhead_pct']:+.1f} %; "
        f"median of the paired runs {o.get('overhead_pct_paired_median', float('nan')):+.1f} %)"
    )
    if "wrapper_tiny" in o:
        w = o["wrapper_tiny"]
        print(
            f"   paired runs: {', '.join(f'{p:+.1f} %' for p in o['overhead_pct_paired'])} (compute noise of this "
            f"machine at this length); the wrapper alone (tiny model): {w['fixed_s']:.2f} s per stage + "
            f"{1000 * w['per_step_s']:.1f} ms per logged step -> {o['default_sft_stage_pct']:.2f} % of the default "
            f"24-step SFT stage"
        )
    d = o["noop_dvc_repro"]
    print("   no-op dvc repro: " + (f"{d['median_s']:.2f} s (median of 3)" if "median_s" in d else d["skipped"]))


if __name__ == "__main__":
    main()
