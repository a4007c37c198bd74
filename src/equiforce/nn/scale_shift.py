"""Per-atom energy head: isolated-atom energies plus scaled and shifted interaction energy."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ScaleShiftEnergy(nn.Module):
    """``E_i = E0[type_i] + scale * e_i + shift``, evaluated in float64.

    The constants are plain Python floats (they live in the model spec), so they stay exact
    whatever dtype the module is moved to; ``e_i`` is cast to float64 first. Keep this block
    in float64 under any precision policy.

    Args:
        atomic_energies: E0 per species, eV.
        scale: multiplier of the interaction energy (typically the force RMS), eV.
        shift: per-atom shift, eV.
    """

    def __init__(self, atomic_energies: Sequence[float], scale: float, shift: float):
        super().__init__()
        self.atomic_energies = tuple(float(e) for e in atomic_energies)
        self.scale = float(scale)
        self.shift = float(shift)

    def forward(self, energy: torch.Tensor, atom_type: torch.Tensor) -> torch.Tensor:
        """(n_atoms,) interaction energy, any dtype -> (n_atoms,) float64, eV."""
        e0 = torch.tensor(self.atomic_energies, dtype=torch.float64, device=energy.device)
        return e0[atom_type] + self.scale * energy.to(torch.float64) + self.shift
