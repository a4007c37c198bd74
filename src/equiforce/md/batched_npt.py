"""Berendsen NPT for batched MD: ASE's ``NPTBerendsen`` step on a TorchSim state of many cells.

``berendsen_npt_step`` advances every 3D-periodic system of a TorchSim ``MDState`` by one step
of ASE's Berendsen NPT (``ase.md.nptberendsen``; ``Inhomogeneous_NPTBerendsen`` when
anisotropic), with each system's own temperature and the same order of operations, so each
system follows ``run_md(ensemble="npt", npt=NPTSettings(barostat="berendsen"))`` of that
structure alone to round-off (tested):

1. velocities scaled towards the target temperature (``sqrt(1 + (T0/T - 1) dt/tau_T)``,
   clipped to [0.9, 1.1]; T from 3N degrees of freedom);
2. cell and positions scaled by ``1 - dt beta/(3 tau_P) (P0 - P)`` (isotropic: P the mean of
   the diagonal; anisotropic: each cell vector by its own diagonal component), P from the
   stress of the current positions with its ideal-gas (kinetic) part;
3. velocity Verlet with the forces of the scaled positions, the mean momentum per atom
   subtracted after the first half kick (ASE's ``fixcm``).

Two model calls a step, as ASE's: forces at the scaled positions, then at the new ones. All
quantities in ASE units (eV, Å, amu, ``ase.units.fs``); cells are TorchSim's column vectors.
Positions are never wrapped (they stay continuous, as ASE's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from ase import units

from equiforce.md.batched_state import ideal_gas_stress, per_system, system_count


@dataclass(frozen=True)
class BerendsenCoupling:
    """The Berendsen couplings in ASE units.

    Attributes:
        dt: time step (ASE time).
        taut: thermostat time (ASE time).
        taup: barostat time (ASE time).
        compressibility_au: Å^3/eV.
        anisotropic: scale each cell vector by its own pressure component.
        mask: with ``anisotropic``, the cell vectors that scale (ASE's
            ``Inhomogeneous_NPTBerendsen`` ``mask``), or None (all).

    The target pressure is not a coupling: it may differ between systems and move (a ramp).
    """

    dt: float
    taut: float
    taup: float
    compressibility_au: float
    anisotropic: bool
    mask: tuple[bool, bool, bool] | None = None


def berendsen_npt_step(
    state: Any,
    stress: torch.Tensor,
    kT: torch.Tensor,
    pressure: torch.Tensor,
    model: Callable[[Any], dict[str, torch.Tensor]],
    coupling: BerendsenCoupling,
) -> tuple[Any, torch.Tensor]:
    """One Berendsen NPT step of every system (module docstring).

    Args:
        state: TorchSim ``MDState`` (positions Å, momenta, masses amu, cell (n_systems, 3, 3)
            column vectors Å, forces eV/Å, energy eV), changed in place.
        stress: (n_systems, 3, 3) eV/Å^3, ASE sign, of the current positions (no kinetic
            part).
        kT: (n_systems,) each system's target temperature, eV.
        pressure: (n_systems,) each system's target pressure, eV/Å^3.
        model: the TorchSim model (energy, forces and stress of a state).
        coupling: the couplings.

    Returns:
        The state and the stress of its new positions.
    """
    idx, n = state.system_idx, system_count(state)
    dt = coupling.dt
    n_atoms = torch.bincount(idx, minlength=n).to(state.momenta.dtype)
    # 1. the thermostat (ASE NVTBerendsen.scale_velocities)
    kinetic = 0.5 * per_system((state.momenta**2).sum(-1) / state.masses, idx, n)
    temperature = 2.0 * kinetic / (3.0 * n_atoms * units.kB)
    target = kT / units.kB
    scale = torch.sqrt(1.0 + (target / temperature - 1.0) * dt / coupling.taut).clamp(0.9, 1.1)
    state.momenta = state.momenta * scale[idx, None]
    # 2. the barostat (ASE NPTBerendsen / Inhomogeneous_NPTBerendsen.scale_positions_and_cell)
    total = stress + ideal_gas_stress(state)
    diagonal = -torch.diagonal(total, dim1=-2, dim2=-1)  # (n, 3) pressure components
    rate = dt * coupling.compressibility_au / coupling.taup / 3.0
    if coupling.anisotropic:
        excess = pressure[:, None] - diagonal  # (n, 3): one per cell vector
        if coupling.mask is not None:
            excess = excess * torch.tensor(coupling.mask, device=excess.device)
        factors = 1.0 - rate * excess
    else:
        factors = (1.0 - rate * (pressure - diagonal.mean(-1)))[:, None].expand(n, 3)
    rows = state.cell.transpose(-1, -2)  # ASE's cell: lattice vectors as rows
    new_rows = factors[:, :, None] * rows
    transform = torch.linalg.solve(rows, new_rows)  # positions @ M, as ASE's set_cell
    state.positions = torch.einsum("ai,aij->aj", state.positions, transform[idx])
    state.cell = new_rows.transpose(-1, -2).contiguous()
    # 3. velocity Verlet with the forces of the scaled positions, centre-of-mass momentum out
    forces = model(state)["forces"]
    momenta = state.momenta + 0.5 * dt * forces
    momenta = momenta - (per_system(momenta, idx, n) / n_atoms[:, None])[idx]
    state.positions = state.positions + dt * momenta / state.masses[:, None]
    state.momenta = momenta
    out = model(state)
    state.momenta = state.momenta + 0.5 * dt * out["forces"]
    state.energy, state.forces = out["energy"], out["forces"]
    return state, out["stress"]
