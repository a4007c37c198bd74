"""Exponential moving average (EMA) of model parameters.

After each optimizer step ``shadow <- d * shadow + (1 - d) * param`` with
``d = min(decay, (1 + n) / (10 + n))`` where ``n`` counts the updates so far, so the average
is not dominated by the random initial weights (the warm-up of ``torch_ema``, which
mace-torch uses). Buffers are not averaged: they are constants of the model.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """EMA of the trainable parameters of ``model``.

    Args:
        model: the module being trained; its parameters are read at construction and
            on every ``update``.
        decay: target decay in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def current_decay(self) -> float:
        """Decay used by the next ``update``."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current parameters of ``model`` into the average.

        One foreach ``lerp`` over all tensors (a single call per step, the arithmetic of a
        ``lerp_`` per tensor).
        """
        decay = self.current_decay()
        named = dict(model.named_parameters())
        shadows = list(self.shadow.values())
        torch._foreach_lerp_(shadows, [named[n].detach() for n in self.shadow], 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the parameters of ``model`` with the averages."""
        for name, param in model.named_parameters():
            if name in self.shadow:
                param.copy_(self.shadow[name])

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averages into ``model``; restores the raw weights on exit."""
        backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name in backup:
                        param.copy_(backup[name])

    def state_dict(self) -> dict[str, Any]:
        """Serializable state (decay, update count, averages)."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict`` output; parameter names must match."""
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA state does not match the model's parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
