"""The default `dvc repro`, old code vs new, side by side: a fresh clone of each commit on this machine, one
right after the other, nothing cached, the same venv (this one), default params.yaml.

    python -m bench.repro <old commit> <new commit> [--keep DIR]   -> one JSON line, and bench/results/repro-*.json

Per side: wall seconds of `dvc repro`, bytes it wrote (the children's file-system output blocks, as
`/usr/bin/time -v` counts them), bytes left on disk besides `models/` (DVC cache, MLflow store and
artifacts, checkpoints), the stage metrics, and a second, no-op `dvc repro`'s seconds. Takes about an hour
on a 2-core CPU; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.paths import ROOT

BIN = Path(sys.executable).parent
LEFT = [".dvc/cache", "mlartifacts", "mlflow.db", ".checkpoints", ".prefect"]


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    seen, total = set(), 0
    for p in path.rglob("*"):  # hard links counted once, as `du` does
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def side(commit: str, dest: Path) -> dict:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=dest, check=True)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1", PYTHONPATH=str(dest))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
    t0 = time.perf_counter()
    with open(dest / "repro.log", "w") as log:
        rc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    written = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock - before) * 512
    t1 = time.perf_counter()
    subprocess.run([str(BIN / "dvc"), "repro"], cwd=dest, env=env, capture_output=True)
    noop = time.perf_counter() - t1
    metrics = {p.stem: json.loads(p.read_text()) for p in (dest / "metrics").glob("*.json")}
    metrics["eval"] = {p.stem: json.loads(p.read_text()) for p in (dest / "metrics/eval").glob("*.json")}
    return {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True).stdout.strip(),
        "exit": rc.returncode,
        "repro_s": wall,
        "noop_repro_s": noop,
        "written_bytes": written,
        "disk_bytes": {p: du(dest / p) for p in LEFT if (dest / p).exists()},
        "models_bytes": du(dest / "models"),
        "metrics": metrics,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--keep", help="clone into this directory and keep the clones (default: a temporary one)")
    a = ap.parse_args()
    from bench.__main__ import machine

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(a.keep or tmp)
        res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
        for name, commit in (("old", a.old), ("new", a.new)):
            res[name] = side(commit, where / name)
            print(f"{name}: {res[name]['repro_s'] / 60:.1f} min, exit {res[name]['exit']}", file=sys.stderr)
    res["repro"] = {
        "old_s": res["old"]["repro_s"],
        "new_s": res["new"]["repro_s"],
        "ratio": res["new"]["repro_s"] / res["old"]["repro_s"],
    }
    out = ROOT / "bench/results" / f"{time.strftime('%Y-%m-%d')}-repro-side-by-side.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("BENCH " + json.dumps(res["repro"]))


if __name__ == "__main__":
    main()
