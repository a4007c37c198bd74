"""Dynamic loss scaling for fp16 training.

fp16 represents magnitudes between ~6e-8 and 65504, so small gradients underflow to zero. The
loss is multiplied by ``scale`` before the backward pass and the gradients divided by it
afterwards (in float32, the parameter dtype). A step whose unscaled gradients contain inf or
NaN is skipped (the optimizer never sees it) and the scale is multiplied by
``backoff_factor``; after ``growth_interval`` consecutive good steps it is multiplied by
``growth_factor``. ``state_dict`` keeps the scale and the counters, so a resumed run repeats
the same steps bit for bit.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["DynamicLossScaler"]


class DynamicLossScaler:
    """Loss scale that grows while gradients stay finite and halves when they overflow.

    Args:
        init_scale: starting scale (2^16 as in ``torch.amp.GradScaler``).
        growth_factor: multiplier after ``growth_interval`` good steps, > 1.
        backoff_factor: multiplier after a non-finite step, in (0, 1).
        growth_interval: good steps between growths, >= 1.
        max_consecutive_skips: after this many skipped steps in a row the run is considered
            diverged (the gradients are not finite at any scale), >= 1.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        max_consecutive_skips: int = 50,
    ):
        if not init_scale > 0 or not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError("need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1")
        if growth_interval < 1 or max_consecutive_skips < 1:
            raise ValueError("growth_interval and max_consecutive_skips must be >= 1")
        self.scale = float(init_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.good_steps = 0  # consecutive finite steps since the last change of scale
        self.consecutive_skips = 0
        self.skipped_total = 0

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * scale``; backpropagate this instead of ``loss``."""
        return loss * self.scale

    def unscale_(self, parameters: Iterable[torch.nn.Parameter]) -> bool:
        """Divide the gradients by the scale in place; returns whether all are finite."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return True
        torch._foreach_mul_(grads, 1.0 / self.scale)
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        return bool(finite)

    def update(self, finite: bool) -> None:
        """Record a step's outcome and adapt the scale."""
        if finite:
            self.consecutive_skips = 0
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
            return
        self.scale *= self.backoff_factor
        self.good_steps = 0
        self.consecutive_skips += 1
        self.skipped_total += 1

    @property
    def diverged(self) -> bool:
        """``max_consecutive_skips`` steps in a row were skipped."""
        return self.consecutive_skips >= self.max_consecutive_skips

    def state_dict(self) -> dict[str, Any]:
        """Scale and counters (plain Python numbers)."""
        return {
            "scale": self.scale,
            "good_steps": self.good_steps,
            "consecutive_skips": self.consecutive_skips,
            "skipped_total": self.skipped_total,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` output."""
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.skipped_total = int(state["skipped_total"])
