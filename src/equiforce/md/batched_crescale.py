"""Stochastic cell rescaling NPT for batched MD: ``equiforce.md.crescale``'s step on a TorchSim
state of many cells.

``crescale_npt_step`` advances every 3D-periodic system of a TorchSim ``MDState`` by one step
of ``StochasticCellRescalingNPT`` (Bussi's thermostat, a half kick, the cell's deformation,
the drift across it, one model call, a half kick), each system with its own temperature and
NumPy generator (the one of its start velocities; a step's draws in the same order: a normal
and a gamma variate for the thermostat, then the barostat's one normal variate, eleven
anisotropic, two more than the free cell vectors with a cell mask), so each system follows
``run_md(ensemble="npt", npt=NPTSettings(barostat="c-rescale"), seed=seed + k)`` of that
structure alone to round-off (tested). The thermostat's factors and the cells' deformations
are computed on the host (``bussi_factors``, ``cell_deformations``: the draws are the
generators'), one transfer of the systems' kinetic energies, pressure tensors and cells there
and of their factors and deformations back a step. Units: eV, Å, amu, ``ase.units.fs``
(ASE's); cells are TorchSim's column vectors; positions are never wrapped.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from equiforce.md.batched_bussi import bussi_factors
from equiforce.md.batched_state import ideal_gas_stress, twice_kinetic_energy
from equiforce.md.crescale import CRescaleCoupling, cell_deformations


def _per_system(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Host values (n, ...) as a tensor on ``like``'s device and dtype."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def crescale_npt_step(
    state: Any,
    stress: torch.Tensor,
    kT: torch.Tensor,
    pressure: torch.Tensor,
    free_atoms: torch.Tensor,
    generators: Sequence[np.random.Generator],
    model: Callable[[Any], dict[str, torch.Tensor]],
    coupling: CRescaleCoupling,
) -> tuple[Any, torch.Tensor]:
    """One stochastic cell rescaling step of every system (module docstring).

    Args:
        state: TorchSim ``MDState`` (positions Å, momenta, masses amu, cell (n_systems, 3, 3)
            column vectors Å, forces eV/Å, energy eV), changed in place.
        stress: (n_systems, 3, 3) eV/Å^3, ASE sign, of the current positions (no kinetic
            part).
        kT: (n_systems,) each system's target temperature, eV.
        pressure: (n_systems,) each system's target pressure, eV/Å^3.
        free_atoms: (n_systems,) each system's atoms that ``FixAtoms`` does not hold (3 degrees
            of freedom each for the thermostat; the held ones, at rest and without force, move
            with the cell).
        generators: each system's NumPy generator.
        model: the TorchSim model (energy, forces and stress of a state).
        coupling: the couplings.

    Returns:
        The state and the stress of its new positions.
    """
    idx, dt, host_kT = state.system_idx, coupling.dt, kT.cpu().numpy()
    kinetic = (0.5 * twice_kinetic_energy(state)).cpu().numpy()
    degrees = (3 * free_atoms).cpu().numpy()
    factors = bussi_factors(kinetic, host_kT, degrees, generators, coupling.thermostat)
    momenta = state.momenta * _per_system(factors, kT)[idx, None] + dt / 2 * state.forces
    state.momenta = momenta
    total = -(stress + ideal_gas_stress(state))
    cells = state.cell.transpose(-1, -2)  # rows
    host = (total.cpu().numpy(), pressure.cpu().numpy(), cells.cpu().numpy())
    deformation = _per_system(cell_deformations(*host, host_kT, generators, coupling), kT)
    inverse_transpose = torch.linalg.inv(deformation).transpose(-1, -2)[idx]
    per_atom = deformation[idx]
    drift = _rows_times(momenta, inverse_transpose) + _rows_times(momenta, per_atom)
    drift = drift / 2 * dt / state.masses[:, None]
    state.positions = _rows_times(state.positions, per_atom) + drift
    state.cell = (cells @ deformation).transpose(-1, -2)
    state.momenta = _rows_times(momenta, inverse_transpose)
    out = model(state)
    state.energy, state.forces, stress = out["energy"], out["forces"], out["stress"]
    state.momenta = state.momenta + dt / 2 * state.forces
    return state, stress


def _rows_times(rows: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(n_atoms, 3) each row times its own (3, 3) matrix of ``matrices`` (n_atoms, 3, 3)."""
    return torch.einsum("ni,nij->nj", rows, matrices)
