"""Exact coefficient buffers that survive any dtype round trip.

Executors hold coefficients (Clebsch-Gordan couplings, symmetric-contraction bases, path
factors) as non-persistent buffers so that ``Module.to`` moves them with the weights. A plain
buffer, though, keeps the precision of every dtype it passed through: a model built in float64,
moved to float32 (a float32 model file is rebuilt that way) and back to float64 carried
float32-rounded couplings, and its float64 energies were only float32-accurate (7.6e-8 eV from
the reference backend on an AcAc molecule) and broke rotation equivariance at 3e-9 relative.

``ExactConstants`` keeps a float64 master of each such buffer on the CPU and, after any
``_apply`` (``to``, ``double``, ``float``, ``cuda``), sets the buffer to the master cast to the
buffer's new dtype and device: each dtype sees its own correctly rounded copy.
"""

from __future__ import annotations

import torch
from torch import nn


class ExactConstants(nn.Module):
    """Base of modules whose floating buffers are exact constants (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._constant_masters: dict[str, torch.Tensor] = {}

    def register_constant(self, name: str, value: torch.Tensor) -> None:
        """Register ``value`` (computed in float64) as the non-persistent buffer ``name``.

        Args:
            name: buffer name.
            value: floating tensor, float64 (a lower dtype would make a rounded master).
        """
        if value.dtype != torch.float64:
            raise ValueError(f"constant {name!r} must be computed in float64, got {value.dtype}")
        self._constant_masters[name] = value.detach().to("cpu", copy=True)
        self.register_buffer(name, value, persistent=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for name, master in self._constant_masters.items():
            current = self._buffers[name]
            self._buffers[name] = master.to(device=current.device, dtype=current.dtype)
        return self
