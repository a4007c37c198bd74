"""Equation of state of a crystal: E(V) with the atoms and the cell's shape relaxed at each
volume, fitted by one of ASE's four-parameter forms for V0, E0, B0 and B0'.

``equation_of_state`` scales the crystal (relaxed: at 0 GPa) to ``n_volumes`` volumes from
``1 - volume_range`` to ``1 + volume_range`` times its own, relaxes each at constant volume
keeping its space group (``equiforce.md.relax.relaxed_crystal``), and fits E(V) (ASE's
``EquationOfState``: Birch-Murnaghan by default, or Vinet, Murnaghan, Birch,
Pourier-Tarantola). Each volume's pressure is also read from the model's stress, -tr(sigma)/3,
and set beside the fit's -dE/dV: for a potential whose stress is its energy's strain
derivative they agree up to the fit's error (a check of the model and of the fit's form).
Units: Å^3 and eV per cell, GPa.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

# ASE's equation-of-state forms with E0, B0, B0' and V0 (in ASE's parameter order)
FORMS = ("birchmurnaghan", "vinet", "murnaghan", "birch", "pouriertarantola")
MIN_VOLUMES = 5  # four parameters and one more


@dataclass(frozen=True)
class EquationOfStateResult:
    """A fitted equation of state (module docstring).

    Attributes:
        form: the fitted form (``FORMS``).
        volumes: (n,) sampled volumes, Å^3 per cell.
        energies: (n,) relaxed energies, eV per cell.
        pressures: (n,) -tr(stress)/3 at each volume, GPa.
        fitted_pressures: (n,) -dE/dV of the fit there, GPa.
        volume: V0, Å^3.
        energy: E0, eV.
        bulk_modulus: B0, GPa.
        pressure_derivative: B0' (dimensionless).
        rms_residual: root mean square of E minus the fit, eV.
    """

    form: str
    volumes: np.ndarray
    energies: np.ndarray
    pressures: np.ndarray
    fitted_pressures: np.ndarray
    volume: float
    energy: float
    bulk_modulus: float
    pressure_derivative: float
    rms_residual: float


def volume_ratios(n_volumes: int, volume_range: float) -> np.ndarray:
    """(n_volumes,) the sampled volumes' ratios to the crystal's, evenly from
    ``1 - volume_range`` to ``1 + volume_range``.

    Raises:
        ValueError: fewer than ``MIN_VOLUMES`` volumes or a range outside (0, 0.3).
    """
    if n_volumes < MIN_VOLUMES or not 0 < volume_range < 0.3:
        raise ValueError(
            f"{n_volumes} volumes, volume range {volume_range}: give at least {MIN_VOLUMES} "
            "volumes and a range between 0 and 0.3"
        )
    return np.linspace(1 - volume_range, 1 + volume_range, n_volumes)


def equation_of_state(
    crystal: Atoms,
    calculator,
    n_volumes: int = 11,
    volume_range: float = 0.06,
    form: str = "birchmurnaghan",
) -> EquationOfStateResult:
    """The equation of state of ``crystal`` (module docstring).

    Args:
        crystal: a 3D-periodic crystal, relaxed (its volume is the middle of the sampled ones).
        calculator: any ASE calculator with stress (an ``EquiforceCalculator``).
        n_volumes: volumes sampled, at least ``MIN_VOLUMES``.
        volume_range: the largest relative change of the volume (0.06: -6 % to +6 %).
        form: one of ``FORMS``.

    Raises:
        ValueError: too few volumes, a range outside (0, 0.3), an unknown form, or not
            periodic in 3D.
        RuntimeError: a relaxation that did not converge, or a fit without a minimum.
    """
    from ase.eos import EquationOfState

    from equiforce.md.relax import relaxed_crystal

    ratios = volume_ratios(n_volumes, volume_range)
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if not crystal.pbc.all():
        raise ValueError(f"{crystal.get_chemical_formula()}: an equation of state needs 3D pbc")
    volumes, energies, pressures = [], [], []
    for ratio in ratios:
        relaxed = relaxed_crystal(crystal, calculator, volume_ratio=ratio).atoms
        volumes.append(relaxed.get_volume())
        energies.append(relaxed.get_potential_energy())
        pressures.append(-relaxed.get_stress()[:3].mean() / units.GPa)
    volumes, energies = np.array(volumes), np.array(energies)
    fit = EquationOfState(volumes, energies, eos=form)
    try:
        fit.fit(warn=False)
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(f"the {form} fit of E(V) failed: {error}") from error
    e0, b0, b0_prime, v0 = (float(value) for value in fit.eos_parameters)
    step = 1e-5 * volumes
    slope = (
        fit.func(volumes + step, *fit.eos_parameters)
        - fit.func(volumes - step, *fit.eos_parameters)
    ) / (2 * step)
    residual = energies - fit.func(volumes, *fit.eos_parameters)
    return EquationOfStateResult(
        form=form,
        volumes=volumes,
        energies=energies,
        pressures=np.array(pressures),
        fitted_pressures=-slope / units.GPa,
        volume=v0,
        energy=e0,
        bulk_modulus=b0 / units.GPa,
        pressure_derivative=b0_prime,
        rms_residual=float(np.sqrt(np.mean(residual**2))),
    )
