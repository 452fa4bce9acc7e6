"""The training processes' context, passed explicitly to every trainer: rank, world size, collectives, the
main-process check; plus the device helpers every forward pass uses. A leaf: it imports nothing of the project.

One process (the usual case) is `SINGLE_PROCESS`, whose collectives are identities. Under `accelerate launch`
(compute.num_processes > 1) flows/launch.py builds a context around the running Accelerator.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class RunContext:
    """Where this process computes (device, autocast dtype), who it is among the training processes and how they
    talk (Accelerate underneath)."""

    accelerator: object = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    def with_dtype(self, dtype: torch.dtype) -> RunContext:
        """The same process computing in another precision (a bf16 sampling copy, an fp32 stage)."""
        return replace(self, dtype=dtype)

    def autocast(self):
        """Mixed precision for matmuls when dtype is not fp32 (master weights, losses and log-probs stay fp32)."""
        enabled = self.dtype != torch.float32
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype, enabled=enabled)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes outputs and logs (always true in a single process)."""
        return self.accelerator is None or self.accelerator.is_main_process

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor summed over the training processes (itself in a single process)."""
        return self.accelerator.reduce(t, "sum") if self.accelerator else t

    def reduce_mean(self, values: dict) -> dict:
        """The mean of each float metric over the processes (ints such as the step are kept as they are)."""
        if not self.accelerator:
            return values
        keys = sorted(k for k, v in values.items() if isinstance(v, float))
        means = self.accelerator.reduce(torch.tensor([values[k] for k in keys], device=self.accelerator.device), "mean")
        return {**values, **dict(zip(keys, means.tolist()))}

    def prepare(self, *objects):
        """Models and optimizers wrapped for data-parallel training (DDP/FSDP); unchanged in one process."""
        if not self.accelerator:
            return objects if len(objects) > 1 else objects[0]
        return self.accelerator.prepare(*objects)

    def no_sync(self, net, skip_all_reduce: bool):
        """Accumulate gradients without all-reducing them (every micro-batch but the last)."""
        if self.accelerator and skip_all_reduce:
            return self.accelerator.no_sync(net)
        return contextlib.nullcontext()

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        if self.accelerator:
            return self.accelerator.clip_grad_norm_(params, max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


SINGLE_PROCESS = RunContext()


def to_device(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
