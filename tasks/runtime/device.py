"""Seeding and the choice of device and precision (compute section of params.yaml)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.runtime.context import RunContext
from tasks.runtime.errors import PipelineError

if TYPE_CHECKING:
    import torch


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


def run_context(compute, stage: str) -> RunContext:
    """The context one process of `stage` computes in: device and dtype from the compute section."""
    device, dtype = pick_device(compute, stage=stage)
    return RunContext(None, device, dtype)
