"""Resumable training: a training stage's whole state, every N steps, in a directory of its own
(the flows give each stage .checkpoints/<stage>/).

Weights are safetensors; optimizer/scheduler/RNG/data-position/controller state is a torch.save of tensors
and plain Python values, read back with weights_only=True (no pickle of arbitrary objects). A checkpoint
carries a fingerprint of the stage's config and data: one written under other params is ignored (and
replaced), never resumed. The stage deletes its checkpoint once its outputs are in place.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch

from tasks.runtime.files import atomic_path


def encode_random_state(state: tuple) -> str:
    """A random.Random state as JSON (torch.load with weights_only=True reads strings, not tuples)."""
    return json.dumps(state)


def decode_random_state(text: str) -> tuple:
    """The inverse of encode_random_state: JSON turned the state's inner tuple into a list."""
    version, internal, gauss = json.loads(text)
    return version, tuple(internal), gauss


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": encode_random_state(random.getstate())}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(decode_random_state(s["python"]))


class Checkpoint:
    """The resume point of one stage: `directory` holds it; `stage` names it in messages.

    A checkpoint is written at steps that are multiples of `every`, and only once `minutes` of training have
    passed since the stage started or since the last one: writing SmolLM2's SFT state is ~1.6 GB (weights and
    AdamW's two moments), which pays only when a crash would lose more work than that costs.
    """

    def __init__(self, directory: Path | None, stage: str, every: int, fingerprint: dict, minutes: float = 0.0):
        # no directory: checkpointing is off (due() is never true, load() finds nothing)
        self.stage, self.every = stage, every if directory else 0
        self.dir = Path(directory) if directory else None
        self.key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        self.min_interval_s, self.last_save = 60.0 * minutes, time.monotonic()

    def due(self, step: int, ctx=None) -> bool:
        """True on every process alike (ctx: the DistContext; the clock's verdict is summed over processes)."""
        if not self.every or step % self.every:
            return False
        late = time.monotonic() - self.last_save >= self.min_interval_s
        if ctx is not None and ctx.world > 1:
            late = bool(ctx.all_sum(torch.tensor([float(late)], device=ctx.accelerator.device)).item() > 0)
        return late

    def save(self, step: int, models: dict, state: dict) -> None:
        """models: {name: nn.Module} saved as safetensors; state: tensors / plain values / state dicts."""
        from safetensors.torch import save_model

        with atomic_path(self.dir) as tmp:
            Path(tmp).mkdir(parents=True)
            for name, m in models.items():
                save_model(m, str(Path(tmp) / f"{name}.safetensors"))
            torch.save({"step": step, "key": self.key, "rng": rng_state(), **state}, Path(tmp) / "state.pt")
        self.last_save = time.monotonic()

    def load(self, models: dict) -> dict | None:
        """The saved state (models restored in place), or None when there is none for these params."""
        from safetensors.torch import load_model

        if not self.every or not (self.dir / "state.pt").exists():
            return None
        path = self.dir / "state.pt"
        state = torch.load(path, weights_only=True)
        if state.get("key") != self.key:
            print(f"{self.stage}: ignoring a checkpoint written under other params or data")
            return None
        if not all(_same_layout(m, self.dir / f"{name}.safetensors") for name, m in models.items()):
            # e.g. written by an older version of the code that wrapped the model differently
            print(f"{self.stage}: ignoring a checkpoint whose weights do not fit this model")
            return None
        for name, m in models.items():
            load_model(m, str(self.dir / f"{name}.safetensors"))
        set_rng_state(state["rng"])
        print(f"{self.stage}: resuming from the checkpoint at step {state['step']}")
        return state


def _same_layout(model: torch.nn.Module, path: Path) -> bool:
    """The file holds the model's tensors: same names and shapes, every tensor there (tied weights, which
    save_model stores once under one of their names, count as there when one of the names is)."""
    from safetensors import safe_open

    if not path.exists():
        return False
    with safe_open(str(path), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    groups: dict[tuple, list[str]] = {}
    for k, v in model.state_dict().items():
        if saved.get(k, tuple(v.shape)) != tuple(v.shape):
            return False
        groups.setdefault((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)), []).append(k)
    names = {k for g in groups.values() for k in g}
    return set(saved) <= names and all(any(k in saved for k in g) for g in groups.values())
