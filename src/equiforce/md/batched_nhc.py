"""Nosé–Hoover chains for batched MD: ASE's chain integrator for many systems at once, and
ASE's ``NoseHooverChainNVT`` step on a TorchSim state of many structures.

``integrate_chains`` is ASE's ``integrate_nhc`` (fourth-order Suzuki–Yoshida, one substep)
for m chains together; it needs only the kinetic energy of the momenta a chain acts on
(a chain scales its momenta, and a scaling by f multiplies their kinetic energy by f^2), so
the atoms' and the cells' chains of ``equiforce.md.batched_mtk`` integrate as one set, and
the momenta are scaled once at the end.

``nose_hoover_nvt_step`` advances every system of a TorchSim ``MDState`` (molecules, slabs
and cells alike) by one step of ASE's ``NoseHooverChainNVT`` (Martyna, Klein & Tuckerman,
J. Chem. Phys. 97, 2635 (1992)): the chain over half a step, velocity Verlet, the chain over
half a step, each system with its own chain (three links, masses ``3 N kT tdamp^2`` then
``kT tdamp^2``, N its free atoms: 3N degrees of freedom, the centre of mass not fixed, as
ASE's; ``FixAtoms`` atoms feel no force through the model given, start at rest and are not
counted, as ``equiforce.md.nose_hoover``'s), so each system follows
``run_md(ensemble="nvt", thermostat="nose-hoover")`` of that structure alone to round-off
(tested). Unlike Langevin it is deterministic and leaves the dynamics unkicked
(time correlations, diffusion). One model call a step. All quantities in ASE units (eV, Å,
amu, ``ase.units.fs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from equiforce.md.batched_state import (
    free_atom_counts,
    system_count,
    twice_kinetic_energy,
    velocity_verlet,
)

# Yoshida's fourth-order weights (Phys. Lett. A 150, 262 (1990)), as ASE's FOURTH_ORDER_COEFFS
_YOSHIDA = (
    1 / (2 - 2 ** (1 / 3)),
    -(2 ** (1 / 3)) / (2 - 2 ** (1 / 3)),
    1 / (2 - 2 ** (1 / 3)),
)
CHAIN_LENGTH = 3  # links of every Nosé–Hoover chain (ASE's tchain and pchain default)


def integrate_chains(
    twice_kinetic: torch.Tensor,
    target: torch.Tensor,
    position: torch.Tensor,
    momentum: torch.Tensor,
    mass: torch.Tensor,
    kT: torch.Tensor,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrate m Nosé–Hoover chains over ``delta`` (ASE's ``integrate_nhc``, one substep),
    each acting on a set of momenta by scaling it (module docstring).

    Args:
        twice_kinetic: (m,) twice the kinetic energy of each chain's momenta, eV.
        target: (m,) what ``twice_kinetic`` is driven to (degrees of freedom x kT), eV.
        position, momentum: (m, length) the chains' variables.
        mass: (m, length) the chains' masses.
        kT: (m,) eV.
        delta: time (ASE time).

    Returns:
        The chains' positions and momenta after ``delta``, each (m, length), and (m,) the
        factors by which each chain scaled its momenta.
    """
    p, inverse_mass = list(momentum.unbind(1)), 1 / mass
    inverse = list(inverse_mass.unbind(1))
    length = len(p)
    factor = torch.ones_like(twice_kinetic)

    def kick(j: int, half: float, quarter: float) -> None:
        if j == 0:
            force = twice_kinetic - target
        else:
            force = p[j - 1] ** 2 * inverse[j - 1] - kT
        if j == length - 1:
            p[j] = p[j] + half * force
        else:  # the drag of the next link, a quarter step before and after
            drag = torch.exp((-quarter) * p[j + 1] * inverse[j + 1])
            p[j] = (p[j] * drag + half * force) * drag

    for weight in _YOSHIDA:
        step = weight * delta
        for j in reversed(range(length)):
            kick(j, step / 2, step / 4)
        position = position + step * torch.stack(p, 1) * inverse_mass
        scale = torch.exp((-step) * p[0] * inverse[0])
        factor, twice_kinetic = factor * scale, twice_kinetic * scale**2
        for j in range(length):
            kick(j, step / 2, step / 4)
    return position, torch.stack(p, 1), factor


def chain_masses(kT: torch.Tensor, damping: float, first: torch.Tensor | float) -> torch.Tensor:
    """(n, chain) masses of n chains at temperatures ``kT`` (n,) eV with damping time
    ``damping`` (ASE time): ``kT damping^2`` each, the first link's times ``first`` (its
    degrees of freedom: 3N for the atoms, 9 for MTK's cell), as ASE's."""
    masses = (kT * damping**2)[:, None].repeat(1, CHAIN_LENGTH)
    masses[:, 0] *= first
    return masses


@dataclass(frozen=True)
class NoseHooverCoupling:
    """The Nosé–Hoover chain NVT couplings in ASE units (``NoseHooverChainNVT``'s).

    Attributes:
        dt: time step (ASE time).
        tdamp: thermostat damping time (ASE time).
    """

    dt: float
    tdamp: float


def nose_hoover_variables(state: Any, fixed: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every system's chain at the start of a run: positions ``eta`` and momenta ``p_eta``,
    each (n_systems, chain), zero, and the number of its free atoms ``free_atoms``
    (n_systems,), those ``fixed`` (n_atoms,) bool (or None: none) does not hold."""
    n, like = system_count(state), state.cell
    variables = {name: like.new_zeros(n, CHAIN_LENGTH) for name in ("eta", "p_eta")}
    variables["free_atoms"] = free_atom_counts(state, fixed, like.dtype)
    return variables


def _thermostat(state: Any, variables: dict, kT: torch.Tensor, coupling, delta: float) -> None:
    """Each system's chain over ``delta``: its momenta scaled, its chain variables moved."""
    free = variables["free_atoms"]
    mass = chain_masses(kT, coupling.tdamp, 3 * free)
    target = 3 * free * kT
    chain = (variables["eta"], variables["p_eta"], mass, kT, delta)
    eta, p_eta, factor = integrate_chains(twice_kinetic_energy(state), target, *chain)
    variables["eta"], variables["p_eta"] = eta, p_eta
    state.momenta = state.momenta * factor[state.system_idx, None]


def nose_hoover_nvt_step(
    state: Any,
    kT: torch.Tensor,
    variables: dict[str, torch.Tensor],
    model: Callable[[Any], dict[str, torch.Tensor]],
    coupling: NoseHooverCoupling,
) -> Any:
    """One Nosé–Hoover chain NVT step of every system (module docstring).

    Args:
        state: TorchSim ``MDState`` (positions Å, momenta, masses amu, forces eV/Å of the
            current positions, energy eV), changed in place.
        kT: (n_systems,) each system's target temperature, eV.
        variables: the systems' ``nose_hoover_variables``, changed in place.
        model: the TorchSim model (energy and forces of a state; zero forces on fixed
            atoms).
        coupling: the couplings.

    Returns:
        The state.
    """
    _thermostat(state, variables, kT, coupling, coupling.dt / 2)
    velocity_verlet(state, model, coupling.dt)
    _thermostat(state, variables, kT, coupling, coupling.dt / 2)
    return state
