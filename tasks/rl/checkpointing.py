"""The resume point of an online stage: weights of the policy (and critic), both optimizers, the prompt RNG, the
running reward statistics, the KL controller's β and the history so far (tasks/runtime/checkpoint.py)."""

from __future__ import annotations

import random
from pathlib import Path

from tasks.runtime.checkpoint import Checkpoint, decode_random_state, encode_random_state

OPTIMIZER_KEYS = {"policy": "optimizer", "value": "value_optimizer"}  # their names in the checkpoint


class OnlineCheckpoint:
    def __init__(self, cfg, inputs, stage: str, directory: Path | None):
        fingerprint = {
            "cfg": cfg.model_dump(exclude={"checkpoint_every", "checkpoint_minutes"}),
            "prompts": inputs.prompts,
            "texts": inputs.texts,
        }
        self.cfg = cfg
        self.ckpt = Checkpoint(directory, stage, cfg.checkpoint_every, fingerprint, cfg.checkpoint_minutes)
        self.prompt_rng: random.Random | None = None
        self.running = None

    def resume(self, modules: dict, optimizers: dict, prompt_rng: random.Random, running) -> tuple[int, float, list]:
        """(first iteration, β, history): restored in place from the checkpoint, or a fresh start."""
        self.prompt_rng, self.running = prompt_rng, running
        state = self.ckpt.load(modules)
        if not state:
            return 0, self.cfg.kl.coef, []
        for name, opt in optimizers.items():
            opt.load_state_dict(state[OPTIMIZER_KEYS[name]])
        prompt_rng.setstate(decode_random_state(state["prompt_rng"]))
        running.load_state(state["running"])
        return state["step"], state["kl_coef"], state["history"]

    def maybe_save(self, done: int, ctx, modules: dict, optimizers: dict, loop_state: dict) -> None:
        """After `done` iterations, when a checkpoint is due and iterations remain (rank 0 writes it)."""
        if self.ckpt.due(done, ctx) and done < self.cfg.iterations and ctx.is_main:
            state = {OPTIMIZER_KEYS[name]: opt.state_dict() for name, opt in optimizers.items()}
            state |= {"prompt_rng": encode_random_state(self.prompt_rng.getstate()), "running": self.running.state()}
            self.ckpt.save(done, modules, state | loop_state)
