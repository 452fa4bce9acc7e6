"""What every trainer returns, the same for SFT, the reward model, DPO and the online stages. A leaf."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainResult:
    """A trained model, saved (rank 0 writes it), with its curves and numbers; JSON-able across processes."""

    model_dir: str  # where the model was saved
    history: list[dict]  # one row per optimizer step (or online iteration): the dvc plots' curves
    metrics: dict  # the stage's summary numbers (metrics/<stage>.json, MLflow)
