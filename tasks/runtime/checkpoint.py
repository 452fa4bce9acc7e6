"""Resumable training: a training stage's whole state, every N steps, in a directory of its own
(the flows give each stage .checkpoints/<stage>/).

Weights are safetensors; optimizer/scheduler/RNG/data-position/controller state is a torch.save of tensors
and plain Python values, read back with weights_only=True (no pickle of arbitrary objects). A checkpoint
carries a fingerprint of the stage's config and data and of LAYOUT_VERSION: one written under other params, or
by code that stored the models another way, is ignored (and replaced), never resumed.
The stage deletes its checkpoint once its outputs are in place.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch

from tasks.runtime.files import atomic_path

# Raise it whenever what a checkpoint holds changes shape (a model wrapped differently, a state key renamed):
# older checkpoints are then ignored instead of failing in load_state_dict.
LAYOUT_VERSION = 3


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
        keyed = {"layout": LAYOUT_VERSION, **fingerprint}
        self.key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()
        self.min_interval_s, self.last_save = 60.0 * minutes, time.monotonic()

    def due(self, step: int, ctx=None) -> bool:
        """True on every process alike (ctx: the RunContext; the clock's verdict is summed over processes)."""
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
            print(f"{self.stage}: ignoring a checkpoint written under other params, data or code")
            return None
        for name, m in models.items():
            load_model(m, str(self.dir / f"{name}.safetensors"))
        set_rng_state(state["rng"])
        print(f"{self.stage}: resuming from the checkpoint at step {state['step']}")
        return state
