"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a dict:

* ``checkpoint_format``/``checkpoint_format_version``: ``"equiforce-checkpoint"``, 1 (not
  ``format``, which ``load_model`` reserves for plain model files);
* ``model``: ``equiforce.models.io.model_payload`` of the model with the *evaluated* weights
  (the EMA when enabled), so ``equiforce.models.load_model(checkpoint)`` gives the model
  that the metrics describe;
* ``train_state_dict``: the raw (non-averaged) weights the optimizer works on;
* ``optimizer``, ``schedule``, ``ema`` (or None): component state dicts;
* ``progress``: ``Progress`` as a dict (epochs done, best validation loss, history);
* ``rng``: Python, NumPy and torch (CPU and CUDA) generator states;
* ``config``: the ``RunConfig`` as a plain dict.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equiforce.files import atomic_torch_save

CHECKPOINT_FORMAT = "equiforce-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class Progress:
    """Where a run stands.

    Attributes:
        epochs_done: completed epochs (the next epoch to run, 0-based).
        best_valid_loss: lowest validation loss of the current stage.
        best_epoch: 1-based epoch of ``best_valid_loss`` (0 before any).
        history: one metrics row per completed epoch (``metrics.CSV_COLUMNS``).
        stop_reason: why training ended (``"max_epochs"``, ``"time_budget"``,
            ``"early_stopping"``) or None.
    """

    epochs_done: int = 0
    best_valid_loss: float = math.inf
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (copies the history rows)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Progress":
        """Inverse of ``to_dict``."""
        return cls(**values)


def capture_rng_state() -> dict[str, Any]:
    """States of the Python, NumPy and torch (CPU, and CUDA when available) generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states from ``capture_rng_state`` output."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` atomically: a reader sees the old file or the new one, never half."""
    checkpoint = {
        "checkpoint_format": CHECKPOINT_FORMAT,
        "checkpoint_format_version": CHECKPOINT_FORMAT_VERSION,
        **checkpoint,
    }
    return atomic_torch_save(checkpoint, path)


_REQUIRED = (
    "model",
    "train_state_dict",
    "optimizer",
    "schedule",
    "ema",
    "progress",
    "rng",
    "config",
)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by ``save_checkpoint``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, not a checkpoint, or missing a field (the message says which).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or foreign files raise many different errors
        raise ValueError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("checkpoint_format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an equiforce training checkpoint")
    version = checkpoint.get("checkpoint_format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format version {version}")
    missing = [name for name in _REQUIRED if name not in checkpoint]
    if missing:
        raise ValueError(f"{path}: broken checkpoint, missing {missing}")
    return checkpoint
