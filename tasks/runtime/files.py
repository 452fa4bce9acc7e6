"""Files every stage writes and reads: JSONL and JSON, outputs that appear whole or not at all, the git commit.
Paths belong to the flows (flows/paths.py): these functions take them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from tasks.runtime.errors import PipelineError


# ---------------------------------------------------------------- JSONL
def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a bad line is reported with file and line number."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found")
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PipelineError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise PipelineError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise PipelineError(f"{path}: no records")
    return rows


def write_jsonl(path: Path, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- outputs
@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary sibling path; rename it onto `final` only if the block succeeds.

    A failed or killed stage therefore never leaves a half-written output, and the previous output
    (and DVC's cache of it) stays intact until the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def git_commit(repo: Path) -> str:
    import subprocess

    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except Exception:
        return "unknown"
