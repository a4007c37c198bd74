"""Stochastic cell rescaling NPT (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020)):
``run_md``'s ``barostat="c-rescale"``, GROMACS's ``pcoupl = C-rescale``.

A first-order barostat like Berendsen's (the volume relaxes to the target pressure without
the oscillations of MTK's cell momenta, so it is safe far from equilibrium), with a noise term
that gives the volume the isothermal-isobaric ensemble's fluctuations (Berendsen's are too
small). In the log-volume eps = ln V, over a step dt:

    d eps = -(beta_T / tau_p) (P0 - P) dt + sqrt(2 kT beta_T dt / (V tau_p)) xi

with P the instantaneous pressure (virial and kinetic parts), beta_T the coupling
compressibility, tau_p the barostat time and xi a standard normal variate. Positions and cell
scale by s = exp(d eps / 3), momenta by 1/s. The step integrates it in lambda = sqrt(V), whose
noise is additive (the paper's time-reversible scheme): lambda moves by
``(D / kT) f dt + sqrt(2 D dt) xi`` with ``D = kT beta_T / (4 tau_p)`` and
``f = -2 lambda (P0 - P - kT / (2 V))``. The temperature is held by Bussi's stochastic velocity
rescaling (``equiforce.md.batched_bussi.bussi_factors``, ASE's ``Bussi``), so both the
particles and the volume sample the ensemble.

A step, one model call (energy, forces, stress):

1. the momenta scaled by Bussi's factor over dt (ASE's ``Bussi`` order: a normal, then a gamma
   variate from the run's generator);
2. a half kick by the forces;
3. the scaling s from the pressure of the current positions and momenta (a normal variate);
4. positions ``s x + (s + 1/s) / 2 p / m dt`` (the drift across the scaling), the cell by s,
   momenta by 1/s;
5. the model at the new positions and cell, and a half kick.

``cell_scalings`` computes step 3 for many systems at once (batched MD shares it:
``equiforce.md.batched_crescale``); ``StochasticCellRescalingNPT`` is the ASE integrator of
``run_md``. Isotropic only (a uniform scaling of the cell); units: eV, Å, amu, ASE time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics

from equiforce.md.batched_bussi import BussiCoupling, bussi_factors


@dataclass(frozen=True)
class CRescaleCoupling:
    """The couplings of stochastic cell rescaling in ASE units.

    Attributes:
        dt: time step (ASE time).
        taut: Bussi thermostat's time constant (ASE time).
        taup: barostat time (ASE time): the volume relaxes over ~``taup`` where
            ``compressibility_au`` is the material's.
        compressibility_au: coupling compressibility beta_T, Å^3/eV (only scales how fast
            the volume relaxes; the fluctuations do not depend on it).

    The target pressure is not a coupling: it may differ between systems and move (a ramp).
    """

    dt: float
    taut: float
    taup: float
    compressibility_au: float

    @property
    def thermostat(self) -> BussiCoupling:
        """The Bussi thermostat's couplings."""
        return BussiCoupling(dt=self.dt, taut=self.taut)


def cell_scalings(
    pressure: np.ndarray,
    target: np.ndarray,
    volume: np.ndarray,
    kT: np.ndarray,
    generators: Sequence[np.random.Generator],
    coupling: CRescaleCoupling,
) -> np.ndarray:
    """Each system's linear scaling factor s over one step (module docstring), drawing one
    normal variate from each system's generator.

    Args:
        pressure: (n,) instantaneous pressures (virial and kinetic), eV/Å^3.
        target: (n,) target pressures P0, eV/Å^3.
        volume: (n,) volumes, Å^3.
        kT: (n,) target temperatures, eV.
        generators: one NumPy generator per system.
        coupling: the couplings.

    Returns:
        (n,) s: positions and cells scale by s, momenta by 1/s.

    Raises:
        RuntimeError: a volume would turn negative (a barostat far too strong for the time
            step).
    """
    dt, beta, taup = coupling.dt, coupling.compressibility_au, coupling.taup
    noise = np.array([generator.standard_normal() for generator in generators])
    root = np.sqrt(volume)  # lambda
    diffusion = kT * beta / (4 * taup)
    force = -2 * root * (target - pressure - kT / (2 * volume))
    step = diffusion / kT * force * dt + np.sqrt(2 * diffusion * dt) * noise
    ratio = 1 + step / root  # sqrt(V' / V)
    if not (ratio > 0).all():
        raise RuntimeError(
            f"stochastic cell rescaling: a volume would turn negative (sqrt(V'/V) = "
            f"{ratio.min():.3g}); lengthen the barostat time or shorten the time step"
        )
    return ratio ** (2 / 3)


class StochasticCellRescalingNPT(MolecularDynamics):
    """Isotropic stochastic cell rescaling NPT with Bussi's thermostat (module docstring).

    Args:
        atoms: a 3D-periodic structure with momenta (not at rest), no constraints.
        timestep: time step (ASE time).
        temperature_K: target temperature, K.
        pressure_au: target pressure, eV/Å^3.
        taut: thermostat time constant (ASE time).
        taup: barostat time (ASE time).
        compressibility_au: coupling compressibility, Å^3/eV.
        rng: the NumPy generator of the noise (thermostat, then barostat, each step).

    Raises:
        ValueError: constraints, or a structure at rest (Bussi's thermostat scales momenta).
    """

    def __init__(
        self,
        atoms: Atoms,
        timestep: float,
        temperature_K: float,
        pressure_au: float,
        taut: float,
        taup: float,
        compressibility_au: float,
        rng: np.random.Generator,
    ):
        if atoms.constraints:
            kinds = [type(constraint).__name__ for constraint in atoms.constraints]
            raise ValueError(
                f"constraints {kinds}: stochastic cell rescaling applies none; use the mtk or "
                "berendsen barostat without them, or NVT"
            )
        if not atoms.get_kinetic_energy() > 0:
            raise ValueError(
                "the structure starts at rest: Bussi's thermostat of stochastic cell "
                "rescaling scales its momenta (start it at a temperature > 0)"
            )
        super().__init__(atoms, timestep)
        self.coupling = CRescaleCoupling(timestep, taut, taup, compressibility_au)
        self.rng = rng
        self.kT = units.kB * temperature_K
        self.pressure_au = pressure_au

    def set_temperature(self, temperature_K: float) -> None:
        """Set the target temperature (thermostat and barostat noise), K."""
        self.kT = units.kB * temperature_K

    def set_pressure(self, pressure_au: float) -> None:
        """Set the target pressure, eV/Å^3."""
        self.pressure_au = pressure_au

    def step(self) -> None:
        """One step (module docstring)."""
        atoms, dt, kT = self.atoms, self.dt, np.array([self.kT])
        degrees = np.array([atoms.get_number_of_degrees_of_freedom()])
        kinetic = np.array([atoms.get_kinetic_energy()])
        factor = bussi_factors(kinetic, kT, degrees, [self.rng], self.coupling.thermostat)[0]
        momenta = factor * atoms.get_momenta() + dt / 2 * atoms.get_forces()
        atoms.set_momenta(momenta)
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        pressure = np.array([-np.trace(stress) / 3])
        volume = np.array([atoms.get_volume()])
        target = np.array([self.pressure_au])
        s = float(cell_scalings(pressure, target, volume, kT, [self.rng], self.coupling)[0])
        drift = (s + 1 / s) / 2 * dt * momenta / self.masses
        positions = s * atoms.positions + drift
        atoms.set_cell(s * atoms.cell.array, scale_atoms=False)
        atoms.set_positions(positions)
        atoms.set_momenta(momenta / s)
        atoms.set_momenta(atoms.get_momenta() + dt / 2 * atoms.get_forces())
