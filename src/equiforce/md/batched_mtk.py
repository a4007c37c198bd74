"""Martyna–Tobias–Klein NPT for batched MD: ASE's MTK step on a TorchSim state of many cells.

``mtk_npt_step`` advances every 3D-periodic system of a TorchSim ``MDState`` by one step of
ASE's ``IsotropicMTKNPT`` (the cell scaled uniformly, ``cell0 exp(eps)``), ``MTKNPT``
(anisotropic: every cell component moves) or ``MaskedMTKNPT`` (the lengths of the cell axes
of a mask move, each with its own momentum along its starting direction), each system with
its own temperature, Nosé–Hoover
chains and cell momenta, in ASE's order of operations, so each system follows
``run_md(ensemble="npt", npt=NPTSettings(barostat="mtk"))`` of that structure alone to
round-off (tested). Unlike Berendsen coupling this samples the isothermal-isobaric ensemble.

The step is the MTK Trotter splitting (Martyna, Tobias & Klein, J. Chem. Phys. 101, 4177
(1994)), half steps around a full one:

1. the barostat's Nosé–Hoover chain on the cell momenta and the thermostat's on the atoms'
   momenta (fourth-order Suzuki–Yoshida, one substep; the two chains of all systems
   integrate together, ``equiforce.md.batched_nhc.integrate_chains``);
2. the cell momenta kicked by ``V (P - P0)`` (P with its ideal-gas part) and the atoms'
   kinetic term, then the atoms' momenta by the forces with the cell momenta's drag;
3. positions and cell advanced for a whole step (exactly, for the frozen momenta: ``exp`` and
   ``exprel`` of the cell momenta's eigenvalues);
4. one model call at the new positions and cell, then 2. and 1. in reverse order.

One model call a step (energy, forces and stress). Each system carries its own variables
(``mtk_variables``: chain positions and momenta, cell momenta; isotropic: the starting cell
and volume), so a state can be sliced by systems and saved for an exact restart. All
quantities in ASE units (eV, Å, amu, ``ase.units.fs``); cells are TorchSim's column vectors.
Positions are never wrapped (they stay continuous, as ASE's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from equiforce.md.batched_nhc import CHAIN_LENGTH, chain_masses, integrate_chains
from equiforce.md.batched_state import (
    atom_counts,
    ideal_gas_stress,
    system_count,
    twice_kinetic_energy,
)


@dataclass(frozen=True)
class MTKCoupling:
    """The MTK couplings in ASE units (ASE's ``IsotropicMTKNPT`` / ``MTKNPT`` arguments, by
    their names).

    Attributes:
        dt: time step (ASE time).
        tdamp: thermostat damping time (ASE time).
        pdamp: barostat damping time (ASE time).
        anisotropic: every cell component moves (``MTKNPT``), else a uniform scaling.
        mask: with ``anisotropic``, the cell axes (a, b, c) whose lengths move
            (``MaskedMTKNPT``), or None.

    Both chains have ASE's default length (``tchain = pchain = 3``) and one substep a half step
    (``tloop = ploop = 1``), as ``run_md``'s. The target pressure is not a coupling: it may
    differ between systems and move (a ramp).
    """

    dt: float
    tdamp: float
    pdamp: float
    anisotropic: bool
    mask: tuple[bool, bool, bool] | None = None

    @property
    def cell_dof(self) -> int:
        """The cell's degrees of freedom the barostat chain drives (ASE's ``cell_dof``; the
        isotropic barostat's first chain mass takes 9 too)."""
        return 9 if self.mask is None else sum(self.mask)


@dataclass(frozen=True)
class _Masses:
    """Each system's virtual masses (ASE's ``Q``, ``W``, ``R``) and its atom count.

    Attributes:
        n_atoms: (n,) atoms per system.
        Q: (n, chain) thermostat chain masses.
        W: (n,) cell momenta's mass.
        R: (n, chain) barostat chain masses.
    """

    n_atoms: torch.Tensor
    Q: torch.Tensor
    W: torch.Tensor
    R: torch.Tensor


def _masses(state: Any, kT: torch.Tensor, coupling: MTKCoupling) -> _Masses:
    """The virtual masses of every system of ``state`` at temperatures ``kT`` (n,) eV."""
    n_atoms = atom_counts(state, kT.dtype)
    Q = chain_masses(kT, coupling.tdamp, 3 * n_atoms)
    R = chain_masses(kT, coupling.pdamp, coupling.cell_dof)
    if coupling.anisotropic:
        W = (n_atoms + 1) * kT * coupling.pdamp**2
    else:
        W = (3 * n_atoms + 3) * kT * coupling.pdamp**2
    return _Masses(n_atoms, Q, W, R)


def mtk_variables(state: Any, coupling: MTKCoupling) -> dict[str, torch.Tensor]:
    """Every system's MTK variables at the start of a run, each (n_systems, ...): the chains'
    positions and momenta (``eta``, ``p_eta``, ``xi``, ``p_xi``, each (n, chain)), the
    cell momenta ``p_cell`` (isotropic: (n,), ASE's ``p_eps``; anisotropic: (n, 3, 3), ASE's
    ``p_g``; masked: (n, 3), ASE's ``p_c``, one per axis), all zero; isotropic also the
    log-strain ``eps`` (n,) and the starting cells ``cell0`` (n, 3, 3) and volumes
    ``volume0`` (n,) Å^3; masked the starting axes' directions ``axes`` (n, 3, 3), rows
    (ASE's ``h0_basis``)."""
    n, like = system_count(state), state.cell
    variables = {name: like.new_zeros(n, CHAIN_LENGTH) for name in ("eta", "p_eta", "xi", "p_xi")}
    if coupling.mask is not None:
        variables["p_cell"] = like.new_zeros(n, 3)
        rows = state.cell.transpose(-1, -2)  # lattice vectors as rows
        variables["axes"] = rows / torch.linalg.norm(rows, dim=-1, keepdim=True)
    elif coupling.anisotropic:
        variables["p_cell"] = like.new_zeros(n, 3, 3)
    else:
        variables["p_cell"] = like.new_zeros(n)
        variables["eps"] = like.new_zeros(n)
        variables["cell0"] = state.cell.clone()
        variables["volume0"] = torch.linalg.det(state.cell).abs()
    return variables


def _exprel(x: torch.Tensor) -> torch.Tensor:
    """(exp(x) - 1) / x, 1 at x = 0 (scipy's ``exprel``)."""
    return torch.where(x == 0, torch.ones_like(x), torch.expm1(x) / torch.where(x == 0, 1, x))


def _thermostats(state: Any, v: dict, masses: _Masses, kT: torch.Tensor, delta: float, c) -> None:
    """The atoms' (thermostat) and the cell momenta's (barostat) Nosé–Hoover chains over
    ``delta``. They act on disjoint variables, so ASE's order (barostat first on the way in,
    last on the way out) is immaterial: they integrate as one set of 2n chains."""
    idx, n = state.system_idx, system_count(state)
    atoms_kinetic = twice_kinetic_energy(state)
    p_cell = v["p_cell"]
    if c.mask is not None:  # one degree of freedom per free axis
        cell_kinetic, cell_target = (p_cell**2).sum(-1) / masses.W, c.cell_dof * kT
    elif c.anisotropic:  # 9 cell degrees of freedom
        cell_kinetic, cell_target = (p_cell**2).sum((-2, -1)) / masses.W, 9 * kT
    else:
        cell_kinetic, cell_target = p_cell**2 / masses.W, kT
    atoms = (atoms_kinetic, 3 * masses.n_atoms * kT, v["eta"], v["p_eta"], masses.Q, kT)
    cell = (cell_kinetic, cell_target, v["xi"], v["p_xi"], masses.R, kT)
    joined = integrate_chains(*(torch.cat(pair) for pair in zip(atoms, cell, strict=True)), delta)
    atoms_out, cell_out = zip(*(both.split(n) for both in joined), strict=True)
    v["eta"], v["p_eta"], atoms_factor = atoms_out
    v["xi"], v["p_xi"], cell_factor = cell_out
    state.momenta = state.momenta * atoms_factor[idx, None]
    v["p_cell"] = p_cell * cell_factor.reshape(-1, *[1] * (p_cell.dim() - 1))


def _kick_cell(state: Any, stress: torch.Tensor, target: torch.Tensor, v: dict, masses, delta, c):
    """The cell momenta kicked by the pressure's excess over ``target`` (n,) eV/Å^3 and the
    atoms' kinetic term."""
    twice_kinetic = twice_kinetic_energy(state)
    total = -(stress + ideal_gas_stress(state))  # (n, 3, 3) pressure tensor
    if c.anisotropic:
        volume = torch.linalg.det(state.cell).abs()
        eye = torch.eye(3, dtype=total.dtype, device=total.device)
        force = volume[:, None, None] * (total - target[:, None, None] * eye)
        kinetic = twice_kinetic / (3 * masses.n_atoms)
        if c.mask is not None:  # along each free axis's direction
            axes, free = v["axes"], torch.tensor(c.mask, device=total.device)
            along = torch.einsum("nci,nij,ncj->nc", axes, force, axes) + kinetic[:, None]
            v["p_cell"] = v["p_cell"] + delta * along * free
            return
        force = force + kinetic[:, None, None] * eye
    else:
        pressure = torch.diagonal(total, dim1=-2, dim2=-1).sum(-1) / 3
        volume = v["volume0"] * torch.exp(3 * v["eps"])
        force = 3 * volume * (pressure - target) + twice_kinetic / masses.n_atoms
    v["p_cell"] = v["p_cell"] + delta * force


def _per_atom(matrices: torch.Tensor, vectors: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Each atom's row vector (n_atoms, 3) times its system's matrix (n, 3, 3)."""
    return torch.einsum("ai,aij->aj", vectors, matrices[idx])


def _cell_momentum(v: dict, c) -> torch.Tensor:
    """The cell momenta as (n, 3, 3) matrices (ASE's ``p_g``; masked: the sum over the axes
    of ``p_c`` times the outer product of the axis's direction)."""
    if c.mask is None:
        return v["p_cell"]
    axes = v["axes"]
    return (axes.transpose(-1, -2) * v["p_cell"][:, None, :]) @ axes


def _kick(state: Any, v: dict, masses: _Masses, delta: float, c) -> None:
    """The atoms' momenta kicked by the forces, damped by the cell momenta."""
    idx, p_cell, forces = state.system_idx, _cell_momentum(v, c), state.forces
    if c.anisotropic:
        eigenvalues, U = torch.linalg.eigh(p_cell)
        trace = torch.diagonal(p_cell, dim1=-2, dim2=-1).sum(-1)
        kappa = eigenvalues + (trace / (3 * masses.n_atoms))[:, None]
        x = (-kappa * delta / masses.W[:, None])[idx]  # (n_atoms, 3)
        y = _per_atom(U, state.momenta, idx)
        solution = y * torch.exp(x) + delta * _per_atom(U, forces, idx) * _exprel(x)
        state.momenta = _per_atom(U.transpose(-1, -2), solution, idx)
    else:
        x = ((1 + 1 / masses.n_atoms) * p_cell * delta / masses.W)[idx, None]
        state.momenta = state.momenta * torch.exp(-x) + delta * forces * _exprel(-x)


def _drift(state: Any, v: dict, masses: _Masses, delta: float, c) -> None:
    """Positions and cell advanced over ``delta`` at the current momenta."""
    idx, p_cell, m = state.system_idx, _cell_momentum(v, c), state.masses[:, None]
    if c.anisotropic:
        eigenvalues, U = torch.linalg.eigh(p_cell)
        rates = eigenvalues * delta / masses.W[:, None]  # (n, 3)
        x = _per_atom(U, state.positions, idx)
        y = _per_atom(U, state.momenta, idx)
        solution = x * torch.exp(rates[idx]) + delta * y / m * _exprel(rates[idx])
        state.positions = _per_atom(U.transpose(-1, -2), solution, idx)
        # ASE's rows h -> (h U) exp(rates) U^T; TorchSim's columns: U exp(rates) U^T cell
        stretch = U @ (torch.exp(rates)[:, :, None] * U.transpose(-1, -2))
        state.cell = stretch @ state.cell
    else:
        x = (delta * p_cell / masses.W)[idx, None]
        state.positions = state.positions * torch.exp(x) + state.momenta * delta / m * _exprel(x)
        v["eps"] = v["eps"] + delta * p_cell / masses.W
        state.cell = v["cell0"] * torch.exp(v["eps"])[:, None, None]


def mtk_npt_step(
    state: Any,
    stress: torch.Tensor,
    kT: torch.Tensor,
    pressure: torch.Tensor,
    variables: dict[str, torch.Tensor],
    model: Callable[[Any], dict[str, torch.Tensor]],
    coupling: MTKCoupling,
) -> tuple[Any, torch.Tensor]:
    """One MTK NPT step of every system (module docstring).

    Args:
        state: TorchSim ``MDState`` (positions Å, momenta, masses amu, cell (n_systems, 3, 3)
            column vectors Å, forces eV/Å, energy eV), changed in place.
        stress: (n_systems, 3, 3) eV/Å^3, ASE sign, of the current positions (no kinetic
            part).
        kT: (n_systems,) each system's target temperature, eV.
        pressure: (n_systems,) each system's target pressure, eV/Å^3.
        variables: the systems' ``mtk_variables``, changed in place.
        model: the TorchSim model (energy, forces and stress of a state).
        coupling: the couplings.

    Returns:
        The state and the stress of its new positions.
    """
    masses = _masses(state, kT, coupling)
    half = coupling.dt / 2
    _thermostats(state, variables, masses, kT, half, coupling)
    _kick_cell(state, stress, pressure, variables, masses, half, coupling)
    _kick(state, variables, masses, half, coupling)
    _drift(state, variables, masses, coupling.dt, coupling)
    out = model(state)
    state.energy, state.forces, stress = out["energy"], out["forces"], out["stress"]
    _kick(state, variables, masses, half, coupling)
    _kick_cell(state, stress, pressure, variables, masses, half, coupling)
    _thermostats(state, variables, masses, kT, half, coupling)
    return state, stress
