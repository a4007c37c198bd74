"""Bussi's stochastic velocity rescaling for batched MD: ASE's ``Bussi`` step on a TorchSim
state of many structures.

``bussi_nvt_step`` advances every system of a TorchSim ``MDState`` (molecules, slabs and
cells alike) by one step of ASE's ``Bussi`` (Bussi, Donadio & Parrinello, J. Chem. Phys. 126,
014101 (2007)): all momenta of a system scaled by one random factor (eq. A7: its kinetic
energy relaxes to the target with time constant ``taut``, with the canonical ensemble's
fluctuations), then velocity Verlet. Each structure draws its two random numbers a step (a
normal and a gamma variate) from its own NumPy generator, the one its start velocities came
from, in ASE's order, so each structure follows ``run_md(ensemble="nvt", thermostat="bussi",
seed=seed + k)`` alone to round-off (tested). Degrees of freedom: 3 per free atom, as ASE's
(``FixAtoms`` atoms not counted, the centre of mass counted). One model call a step, and one
transfer of the systems' kinetic energies to the host and of their factors back. Units: eV,
Å, amu, ``ase.units.fs`` (ASE's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from equiforce.md.batched_state import twice_kinetic_energy, velocity_verlet


@dataclass(frozen=True)
class BussiCoupling:
    """Bussi's couplings in ASE units (``ase.md.bussi.Bussi``'s).

    Attributes:
        dt: time step (ASE time).
        taut: time constant of the kinetic energy's relaxation (ASE time).
    """

    dt: float
    taut: float


def bussi_factors(
    kinetic: np.ndarray,
    kT: np.ndarray,
    degrees: np.ndarray,
    generators: Sequence[np.random.Generator],
    coupling: BussiCoupling,
) -> np.ndarray:
    """Each system's rescaling factor (ASE's ``Bussi.calculate_alpha``), drawing a normal
    then a gamma variate from the system's generator.

    Args:
        kinetic: (n,) kinetic energies, eV (> 0).
        kT: (n,) target temperatures, eV.
        degrees: (n,) degrees of freedom.
        generators: one NumPy generator per system.
        coupling: the couplings.

    Returns:
        (n,) factors on the momenta.
    """
    decay = math.exp(-coupling.dt / coupling.taut)
    factors = np.empty(len(kinetic))
    for j, generator in enumerate(generators):
        target = 0.5 * kT[j] * degrees[j]
        scaling = (1 - decay) * target / kinetic[j] / degrees[j]
        normal = generator.standard_normal()
        chi_squared = 2.0 * generator.standard_gamma(0.5 * (degrees[j] - 1))
        factors[j] = math.sqrt(
            decay + scaling * (chi_squared + normal**2) + 2 * normal * math.sqrt(decay * scaling)
        )
    return factors


def bussi_nvt_step(
    state: Any,
    kT: torch.Tensor,
    free_atoms: torch.Tensor,
    generators: Sequence[np.random.Generator],
    model: Callable[[Any], dict[str, torch.Tensor]],
    coupling: BussiCoupling,
) -> Any:
    """One Bussi NVT step of every system (module docstring).

    Args:
        state: TorchSim ``MDState`` (positions Å, momenta, masses amu, forces eV/Å of the
            current positions, energy eV), changed in place.
        kT: (n_systems,) each system's target temperature, eV.
        free_atoms: (n_systems,) each system's atoms that no ``FixAtoms`` holds.
        generators: each system's NumPy generator.
        model: the TorchSim model (energy and forces of a state; zero forces on fixed
            atoms).
        coupling: the couplings.

    Returns:
        The state.
    """
    kinetic = (0.5 * twice_kinetic_energy(state)).cpu().numpy()
    degrees = (3 * free_atoms).cpu().numpy()
    factors = bussi_factors(kinetic, kT.cpu().numpy(), degrees, generators, coupling)
    scale = torch.as_tensor(factors, dtype=state.momenta.dtype, device=state.momenta.device)
    state.momenta = state.momenta * scale[state.system_idx, None]
    velocity_verlet(state, model, coupling.dt)
    return state
