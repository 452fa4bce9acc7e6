"""GRPO and RLOO next to PPO-ptx on the default task: same machine, prompts, SFT model and RM, several seeds.

    python -m bench.group train <out dir> <algo> <seed> <iterations>   # one training, timed -> <out dir>/<run>/
    python -m bench.group eval <out dir> <result.json>                 # every saved policy vs SFT, aggregated

`train` runs the stage's own code (tasks/rl/ppo.py) with params.yaml's section for the algorithm,
its seed and iteration count replaced, in the stage's precision; it saves the policy and `timing.json`
(seconds of the whole training, loading included, and of each iteration). `eval` runs the eval stage's code
(tasks/eval/evaluate.py, the `eval` section: same prompts, samples and seed for every policy; SFT samples once)
on all saved policies, then per (algorithm, iterations) the mean and Student's t interval over seeds and
Welch's interval of each difference to PPO-ptx (tasks/eval/dvc_experiments.py: what `make seeds` reports).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def train(out_dir: Path, algo: str, seed: int, iterations: int) -> dict:
    from flows.online import train_online
    from tasks import config
    from tasks.rl.ppo import train_ppo
    from tasks.runtime.device import run_context

    params = config.read_params(Path("params.yaml"))
    ctx = run_context(config.load("compute", params), algo)
    cfg = config.load(algo, params).model_copy(update={"seed": seed, "iterations": iterations})
    run_dir = out_dir / f"{algo}-i{iterations}-s{seed}"
    stamps = []
    t0 = time.perf_counter()
    out = train_online(train_ppo, algo, cfg, run_dir, ctx, lambda i, row: stamps.append(time.perf_counter()))
    seconds = time.perf_counter() - t0  # the save included, as in the stage
    timing = {
        "algo": algo,
        "seed": seed,
        "iterations": iterations,
        "train_s": seconds,
        "iteration_s": [b - a for a, b in zip(stamps, stamps[1:])],
        "dtype": str(ctx.dtype),
        "history": out.history,
    }
    (run_dir / "timing.json").write_text(json.dumps(timing, indent=1))
    print(json.dumps({k: v for k, v in timing.items() if k != "history"}))
    return timing


def evaluate(out_dir: Path, result: Path) -> dict:
    from flows.eval import evaluate as evaluate_stage
    from tasks import config
    from tasks.eval.dvc_experiments import aggregate, welch_interval

    params = config.read_params(Path("params.yaml"))
    runs = {d.name: d for d in sorted(out_dir.iterdir()) if (d / "timing.json").exists()}
    t0 = time.perf_counter()
    out = evaluate_stage.fn(runs)  # the eval stage's own task, outside a flow run
    eval_s = time.perf_counter() - t0
    groups: dict[str, list[dict]] = {}
    for name, d in runs.items():
        timing = json.loads((d / "timing.json").read_text())
        key = name.rsplit("-s", 1)[0]  # <algo>-i<iterations>
        row = {"seed": timing["seed"], "train_s": timing["train_s"], **out["policies"][name]["metrics"]}
        groups.setdefault(key, []).append(row)
    level = config.load("seeds", params).level
    summary = aggregate({k: v for k, v in groups.items() if len(v) >= 2}, level)
    for key, rows in groups.items():
        if len(rows) >= 2:
            summary[key]["train_s"] = _t(rows, "train_s", level)
    ppo = next((k for k in groups if k.startswith("ppo-")), None)
    diffs = {}
    for key in groups:
        if ppo and key != ppo:
            diffs[f"{key}_vs_{ppo}"] = {
                m: welch_interval([r[m] for r in groups[key]], [r[m] for r in groups[ppo]], level)
                for m in ("win_rate_gold", "gold_reward", "kl", "train_s")
            }
    report = {
        "command": "python -m bench.group eval RUNS_DIR",  # no machine path in a committed result
        "cpu": _cpu(),
        "eval_s": eval_s,
        "sft": out["policies"]["sft"]["metrics"],
        "runs": groups,
        "summary": summary,
        "differences_vs_ppo": diffs,
    }
    result.write_text(json.dumps(report, indent=1))
    for key, m in summary.items():
        print(
            f"{key:<10} win {m['win_rate_gold']['mean']:.3f} [{m['win_rate_gold']['lo']:.3f}, "
            f"{m['win_rate_gold']['hi']:.3f}]  gold {m['gold_reward']['mean']:.3f}  kl {m['kl']['mean']:.2f} "
            f"[{m['kl']['lo']:.2f}, {m['kl']['hi']:.2f}]  train {m['train_s']['mean']:.0f} s"
        )
    return report


def _t(rows: list[dict], key: str, level: float) -> dict:
    from tasks.eval import stats

    return stats.t_interval([r[key] for r in rows], level)


def _cpu() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?")
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{model} ({', '.join(bf16) or 'no bf16 units'})"


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "train":
        train(Path(args[0]), args[1], int(args[2]), int(args[3]))
    elif command == "eval":
        evaluate(Path(args[0]), Path(args[1]))
    else:
        sys.exit("usage: python -m bench.group train <dir> <algo> <seed> <iterations> | eval <dir> <result.json>")
