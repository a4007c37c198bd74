"""What the batched integrators (``equiforce.md.batched_npt``, ``batched_mtk``,
``batched_nhc``, ``batched_bussi``) share on a TorchSim state holding many systems: per-system
counts, sums over each system's atoms, kinetic energies, the ideal-gas stress, and a
velocity-Verlet step. Units: eV, Å, amu, ``ase.units.fs`` (ASE's); cells are TorchSim's column
vectors.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def system_count(state: Any) -> int:
    """The number of systems of a TorchSim state, from its (n_systems, 3, 3) cells (TorchSim's
    ``n_systems`` runs ``torch.unique``, a device sync, on every call)."""
    return state.cell.shape[0]


def per_system(values: torch.Tensor, system_idx: torch.Tensor, n_systems: int) -> torch.Tensor:
    """Sum of per-atom ``values`` (n_atoms, ...) over each system: (n_systems, ...)."""
    out = torch.zeros((n_systems, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, system_idx, values)


def atom_counts(state: Any, dtype: torch.dtype) -> torch.Tensor:
    """(n_systems,) the number of atoms of each system of a TorchSim state, as ``dtype``."""
    return torch.bincount(state.system_idx, minlength=system_count(state)).to(dtype)


def free_atom_counts(state: Any, fixed: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(n_systems,) the atoms of each system that ``fixed`` ((n_atoms,) bool, the atoms a
    ``FixAtoms`` holds; None: none) leaves free, as ``dtype``."""
    counts = atom_counts(state, dtype)
    if fixed is None:
        return counts
    return counts - per_system(fixed.to(dtype), state.system_idx, system_count(state))


def twice_kinetic_energy(state: Any) -> torch.Tensor:
    """(n_systems,) twice each system's kinetic energy, sum(p^2 / m), eV."""
    kinetic = (state.momenta**2).sum(-1) / state.masses
    return per_system(kinetic, state.system_idx, system_count(state))


def ideal_gas_stress(state: Any) -> torch.Tensor:
    """The kinetic part of each system's stress, -sum(p p^T / m) / V: (n_systems, 3, 3) eV/Å^3
    (ASE's ``get_stress(include_ideal_gas=True)`` adds it)."""
    p, m = state.momenta, state.masses
    outer = p[:, :, None] * p[:, None, :] / m[:, None, None]
    volume = torch.linalg.det(state.cell).abs()
    return -per_system(outer, state.system_idx, system_count(state)) / volume[:, None, None]


def velocity_verlet(state: Any, model: Callable[[Any], dict[str, torch.Tensor]], dt: float):
    """Velocity Verlet over ``dt`` (ASE time), ASE's order: half kick with the state's
    forces, drift, one model call (energy, forces) at the new positions, half kick. The
    state (positions Å, momenta, masses amu, forces eV/Å, energy eV) changes in place."""
    state.momenta = state.momenta + dt / 2 * state.forces
    state.positions = state.positions + dt * state.momenta / state.masses[:, None]
    out = model(state)
    state.energy, state.forces = out["energy"], out["forces"]
    state.momenta = state.momenta + dt / 2 * state.forces
