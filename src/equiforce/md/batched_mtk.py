"""Martyna–Tobias–Klein NPT for batched MD: ASE's MTK step on a TorchSim state of many cells.

``mtk_npt_step`` advances every 3D-periodic system of a TorchSim ``MDState`` by one step of
ASE's ``IsotropicMTKNPT`` (the cell scaled uniformly, ``cell0 exp(eps)``) or ``MTKNPT``
(anisotropic: every cell component moves), each system with its own temperature, Nosé–Hoover
chains and cell momenta, in ASE's order of operations, so each system follows
``run_md(ensemble="npt", npt=NPTSettings(barostat="mtk"))`` of that structure alone to
round-off (tested). Unlike Berendsen coupling this samples the isothermal-isobaric ensemble.

The step is the MTK Trotter splitting (Martyna, Tobias & Klein, J. Chem. Phys. 101, 4177
(1994)), half steps around a full one:

1. the barostat's Nosé–Hoover chain on the cell momenta, then the thermostat's on the atoms'
   momenta (fourth-order Suzuki–Yoshida, ``tloop`` / ``ploop`` substeps);
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

from equiforce.md.batched_npt import ideal_gas_stress, per_system

# Yoshida's fourth-order weights (Phys. Lett. A 150, 262 (1990)), as ASE's FOURTH_ORDER_COEFFS
_YOSHIDA = (
    1 / (2 - 2 ** (1 / 3)),
    -(2 ** (1 / 3)) / (2 - 2 ** (1 / 3)),
    1 / (2 - 2 ** (1 / 3)),
)


@dataclass(frozen=True)
class MTKCoupling:
    """The MTK couplings in ASE units (ASE's ``IsotropicMTKNPT`` / ``MTKNPT`` arguments, by
    their names).

    Attributes:
        dt: time step (ASE time).
        tdamp: thermostat damping time (ASE time).
        pdamp: barostat damping time (ASE time).
        pressure_au: target pressure, eV/Å^3.
        anisotropic: every cell component moves (``MTKNPT``), else a uniform scaling.
        tchain: thermostat chain length.
        pchain: barostat chain length.
        tloop: thermostat substeps.
        ploop: barostat substeps.
    """

    dt: float
    tdamp: float
    pdamp: float
    pressure_au: float
    anisotropic: bool
    tchain: int = 3
    pchain: int = 3
    tloop: int = 1
    ploop: int = 1


@dataclass(frozen=True)
class _Masses:
    """Each system's virtual masses (ASE's ``Q``, ``W``, ``R``) and its atom count.

    Attributes:
        n_atoms: (n,) atoms per system.
        Q: (n, tchain) thermostat chain masses.
        W: (n,) cell momenta's mass.
        R: (n, pchain) barostat chain masses.
    """

    n_atoms: torch.Tensor
    Q: torch.Tensor
    W: torch.Tensor
    R: torch.Tensor


def _masses(state: Any, kT: torch.Tensor, coupling: MTKCoupling) -> _Masses:
    """The virtual masses of every system of ``state`` at temperatures ``kT`` (n,) eV."""
    n_atoms = torch.bincount(state.system_idx, minlength=state.n_systems).to(kT.dtype)
    Q = (kT * coupling.tdamp**2)[:, None].repeat(1, coupling.tchain)
    Q[:, 0] *= 3 * n_atoms
    R = (kT * coupling.pdamp**2)[:, None].repeat(1, coupling.pchain)
    R[:, 0] *= 9
    if coupling.anisotropic:
        W = (n_atoms + 1) * kT * coupling.pdamp**2
    else:
        W = (3 * n_atoms + 3) * kT * coupling.pdamp**2
    return _Masses(n_atoms, Q, W, R)


def mtk_variables(state: Any, coupling: MTKCoupling) -> dict[str, torch.Tensor]:
    """Every system's MTK variables at the start of a run, each (n_systems, ...): the chains'
    positions and momenta (``eta``, ``p_eta`` (n, tchain); ``xi``, ``p_xi`` (n, pchain)), the
    cell momenta ``p_cell`` (isotropic: (n,), ASE's ``p_eps``; anisotropic: (n, 3, 3), ASE's
    ``p_g``), all zero; isotropic also the log-strain ``eps`` (n,) and the starting cells
    ``cell0`` (n, 3, 3) and volumes ``volume0`` (n,) Å^3."""
    n, like = state.n_systems, state.cell
    variables = {
        "eta": like.new_zeros(n, coupling.tchain),
        "p_eta": like.new_zeros(n, coupling.tchain),
        "xi": like.new_zeros(n, coupling.pchain),
        "p_xi": like.new_zeros(n, coupling.pchain),
    }
    if coupling.anisotropic:
        variables["p_cell"] = like.new_zeros(n, 3, 3)
    else:
        variables["p_cell"] = like.new_zeros(n)
        variables["eps"] = like.new_zeros(n)
        variables["cell0"] = state.cell.clone()
        variables["volume0"] = torch.linalg.det(state.cell).abs()
    return variables


def _chain(
    thermostatted: torch.Tensor,
    twice_kinetic: Callable[[torch.Tensor], torch.Tensor],
    scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    position: torch.Tensor,
    momentum: torch.Tensor,
    mass: torch.Tensor,
    kT: torch.Tensor,
    delta: float,
    loops: int,
) -> torch.Tensor:
    """Integrate one Nosé–Hoover chain per system over ``delta`` (ASE's ``integrate_nhc``).

    Args:
        thermostatted: the momenta the chain acts on (atoms' or cell's).
        twice_kinetic: (n,) twice their kinetic energy per system, of the momenta given.
        scale: the momenta given multiplied by (n,) factors, one per system.
        target: (n,) what ``twice_kinetic`` is driven to (degrees of freedom x kT), eV.
        position, momentum: (n, chain) the chain's variables, changed in place.
        mass: (n, chain) the chain's masses.
        kT: (n,) eV.
        delta: time (ASE time).
        loops: substeps.

    Returns:
        The thermostatted momenta after ``delta``.
    """
    length = position.shape[1]

    def kick(j: int, half: float, quarter: float) -> None:
        if j < length - 1:
            momentum[:, j] *= torch.exp(-quarter * momentum[:, j + 1] / mass[:, j + 1])
        if j == 0:
            force = twice_kinetic(thermostatted) - target
        else:
            force = momentum[:, j - 1] ** 2 / mass[:, j - 1] - kT
        momentum[:, j] += half * force
        if j < length - 1:
            momentum[:, j] *= torch.exp(-quarter * momentum[:, j + 1] / mass[:, j + 1])

    for _ in range(loops):
        for weight in _YOSHIDA:
            step = weight * delta / loops
            for j in reversed(range(length)):
                kick(j, step / 2, step / 4)
            position += step * momentum / mass
            thermostatted = scale(thermostatted, torch.exp(-step * momentum[:, 0] / mass[:, 0]))
            for j in range(length):
                kick(j, step / 2, step / 4)
    return thermostatted


def _exprel(x: torch.Tensor) -> torch.Tensor:
    """(exp(x) - 1) / x, 1 at x = 0 (scipy's ``exprel``)."""
    return torch.where(x == 0, torch.ones_like(x), torch.expm1(x) / torch.where(x == 0, 1, x))


def _thermostat(state: Any, v: dict, masses: _Masses, kT: torch.Tensor, delta: float, c) -> None:
    """The atoms' Nosé–Hoover chain over ``delta``: the momenta scaled per system."""
    idx, n, m = state.system_idx, state.n_systems, state.masses

    def twice_kinetic(p: torch.Tensor) -> torch.Tensor:
        return per_system((p**2).sum(-1) / m, idx, n)

    def scale(p: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return p * factor[idx, None]

    target = 3 * masses.n_atoms * kT
    args = (v["eta"], v["p_eta"], masses.Q, kT, delta, c.tloop)
    state.momenta = _chain(state.momenta, twice_kinetic, scale, target, *args)


def _barostat(v: dict, masses: _Masses, kT: torch.Tensor, delta: float, c) -> None:
    """The cell momenta's Nosé–Hoover chain over ``delta``."""
    if c.anisotropic:  # 9 cell degrees of freedom

        def twice_kinetic(p: torch.Tensor) -> torch.Tensor:
            return (p**2).sum((-2, -1)) / masses.W

        def scale(p: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
            return p * factor[:, None, None]

        target = 9 * kT
    else:

        def twice_kinetic(p: torch.Tensor) -> torch.Tensor:
            return p**2 / masses.W

        def scale(p: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
            return p * factor

        target = kT
    args = (v["xi"], v["p_xi"], masses.R, kT, delta, c.ploop)
    v["p_cell"] = _chain(v["p_cell"], twice_kinetic, scale, target, *args)


def _kick_cell(state: Any, stress: torch.Tensor, v: dict, masses: _Masses, delta: float, c):
    """The cell momenta kicked by the pressure's excess and the atoms' kinetic term."""
    idx, n = state.system_idx, state.n_systems
    twice_kinetic = per_system((state.momenta**2).sum(-1) / state.masses, idx, n)
    total = -(stress + ideal_gas_stress(state))  # (n, 3, 3) pressure tensor
    if c.anisotropic:
        volume = torch.linalg.det(state.cell).abs()
        eye = torch.eye(3, dtype=total.dtype, device=total.device)
        force = volume[:, None, None] * (total - c.pressure_au * eye)
        force = force + (twice_kinetic / (3 * masses.n_atoms))[:, None, None] * eye
    else:
        pressure = torch.diagonal(total, dim1=-2, dim2=-1).sum(-1) / 3
        volume = v["volume0"] * torch.exp(3 * v["eps"])
        force = 3 * volume * (pressure - c.pressure_au) + twice_kinetic / masses.n_atoms
    v["p_cell"] = v["p_cell"] + delta * force


def _per_atom(matrices: torch.Tensor, vectors: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Each atom's row vector (n_atoms, 3) times its system's matrix (n, 3, 3)."""
    return torch.einsum("ai,aij->aj", vectors, matrices[idx])


def _kick(state: Any, v: dict, masses: _Masses, delta: float, c) -> None:
    """The atoms' momenta kicked by the forces, damped by the cell momenta."""
    idx, p_cell, forces = state.system_idx, v["p_cell"], state.forces
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
    idx, p_cell, m = state.system_idx, v["p_cell"], state.masses[:, None]
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
        variables: the systems' ``mtk_variables``, changed in place.
        model: the TorchSim model (energy, forces and stress of a state).
        coupling: the couplings.

    Returns:
        The state and the stress of its new positions.
    """
    masses = _masses(state, kT, coupling)
    half = coupling.dt / 2
    _barostat(variables, masses, kT, half, coupling)
    _thermostat(state, variables, masses, kT, half, coupling)
    _kick_cell(state, stress, variables, masses, half, coupling)
    _kick(state, variables, masses, half, coupling)
    _drift(state, variables, masses, coupling.dt, coupling)
    out = model(state)
    state.energy, state.forces, stress = out["energy"], out["forces"], out["stress"]
    _kick(state, variables, masses, half, coupling)
    _kick_cell(state, stress, variables, masses, half, coupling)
    _thermostat(state, variables, masses, kT, half, coupling)
    _barostat(variables, masses, kT, half, coupling)
    return state, stress
