"""Small helpers every stage uses: errors, JSONL, atomic outputs, seeding, device choice. Imports nothing of the
project (paths belong to the flows: flows/paths.py)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class PipelineError(Exception):
    """An error a user can fix (bad params, bad input file): printed as one line, no traceback."""


def die_cleanly(main):
    """Run main(); a PipelineError becomes one 'error: ...' line and exit code 2.

    Set RLHF_DEBUG=1 to get the full traceback instead.
    """
    try:
        return main()
    except PipelineError as e:
        if os.environ.get("RLHF_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


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


# ---------------------------------------------------------------- runtime
def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_bf16_native(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bf16 arithmetic (AMX-BF16 or AVX512-BF16 in /proc/cpuinfo's flags)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def pick_device(compute, cpuinfo: str | None = None, stage: str | None = None) -> tuple[str, torch.dtype]:
    """(device, autocast dtype) from the compute config: bf16 where the GPU or CPU computes it natively, except
    for a stage in compute.fp32_stages."""
    import torch

    if compute.threads:
        torch.set_num_threads(compute.threads)
    cuda = torch.cuda.is_available()
    if compute.device == "cuda" and not cuda:
        raise PipelineError("compute.device is 'cuda' but no CUDA device is visible")
    device = "cuda" if (compute.device == "cuda" or (compute.device == "auto" and cuda)) else "cpu"
    bf16_ok = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_bf16_native(cpuinfo)
    if compute.precision == "bf16" and not bf16_ok:
        # Without bf16 units the CPU emulates it, several times slower than fp32: refuse rather than crawl.
        raise PipelineError(
            "compute.precision is 'bf16' but this device has no native bf16 (no amx_bf16/avx512_bf16): use fp32 or auto"
        )
    use_bf16 = compute.precision == "bf16" or (compute.precision == "auto" and bf16_ok)
    use_bf16 = use_bf16 and stage not in compute.fp32_stages
    return device, (torch.bfloat16 if use_bf16 else torch.float32)


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
