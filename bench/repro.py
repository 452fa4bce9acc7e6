"""The default `dvc repro`, old code vs new, side by side: a fresh clone of each commit on this machine, one
right after the other, nothing cached, the same venv (this one), default params.yaml.

    python -m bench.repro <old commit> <new commit> [--keep DIR]   -> one JSON line, and bench/results/repro-*.json

Per side: wall seconds of `dvc repro`, bytes it wrote (the children's file-system output blocks, as
`/usr/bin/time -v` counts them), bytes left on disk besides `models/` (DVC cache, MLflow store and
artifacts, checkpoints; a cache file hard-linked to a file in models/ is not counted twice), the stage
metrics, and a second, no-op `dvc repro`'s seconds. Takes about an hour on a 2-core CPU; nothing else should
run meanwhile.
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


def du(path: Path, seen: set | None = None) -> int:
    """Bytes under path, each file once however many hard links it has (as `du` counts), leaving out the
    files already in `seen` (and adding this path's to it)."""
    seen = set() if seen is None else seen
    total = 0
    for p in [path] if path.is_file() else path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def repro_commands(makefile: Path) -> list[list[str]]:
    """The dvc commands of that commit's `make repro` recipe (its `setup` prerequisite left out: the venv is
    this one), e.g. [["repro"], ["checkout", "--relink"]]."""
    lines = makefile.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("repro:"))
    recipe = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.split())
    return [words[1:] for words in recipe if words[0] == "dvc"]


def side(commit: str, dest: Path) -> dict:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=dest, check=True)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1", PYTHONPATH=str(dest))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
    t0 = time.perf_counter()
    with open(dest / "repro.log", "w") as log:
        for cmd in repro_commands(dest / "Makefile"):
            rc = subprocess.run([str(BIN / "dvc"), *cmd], cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc.returncode:
                break
    wall = time.perf_counter() - t0
    written = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock - before) * 512
    t1 = time.perf_counter()
    subprocess.run([str(BIN / "dvc"), "repro"], cwd=dest, env=env, capture_output=True)
    noop = time.perf_counter() - t1
    in_models: set = set()
    models_bytes = du(dest / "models", in_models)  # a DVC cache file linked to models/ is not counted again
    besides = {p: du(dest / p, in_models) for p in LEFT if (dest / p).exists()}
    metrics = {p.stem: json.loads(p.read_text()) for p in (dest / "metrics").glob("*.json")}
    metrics["eval"] = {p.stem: json.loads(p.read_text()) for p in (dest / "metrics/eval").glob("*.json")}
    return {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True).stdout.strip(),
        "exit": rc.returncode,
        "repro_s": wall,
        "noop_repro_s": noop,
        "written_bytes": written,
        "disk_bytes": besides,
        "disk_besides_models_bytes": sum(besides.values()),
        "models_bytes": models_bytes,
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
        for name, commit in (("new", a.new), ("old", a.old)):  # the new side's metrics are the ones not yet known
            res[name] = side(commit, where / name)
            print(f"{name}: {res[name]['repro_s'] / 60:.1f} min, exit {res[name]['exit']}", file=sys.stderr)
    res["repro"] = {
        "old_s": res["old"]["repro_s"],
        "new_s": res["new"]["repro_s"],
        "ratio": res["new"]["repro_s"] / res["old"]["repro_s"],
        **{
            f"{k}_{side}": res[side][k]
            for k in ("written_bytes", "disk_besides_models_bytes", "noop_repro_s")
            for side in ("old", "new")
        },
    }
    out = ROOT / "bench/results" / f"{time.strftime('%Y-%m-%d')}-repro-side-by-side.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("BENCH " + json.dumps(res["repro"]))


if __name__ == "__main__":
    main()
