"""Quasi-harmonic thermal expansion: the volume, bulk modulus and expansion coefficient of a
crystal against temperature, from its phonons at several volumes.

``quasi_harmonic`` scales the relaxed crystal to volumes around its own (``n_volumes`` from
``1 - volume_range`` to ``1 + volume_range`` times it), relaxes each at constant volume (the
atoms and the cell's shape, its space group kept), and takes there the static energy E(V) and
the phonons' harmonic free energy F_vib(V, T) (``equiforce.md.phonons``: the supercell's exact
Hessian, a Monkhorst-Pack mesh). ``equilibrium_volumes`` then fits, at each temperature,
Birch and Murnaghan's equation of state to F(V, T) = E(V) + F_vib(V, T) (ASE's
``EquationOfState``): its minimum is the volume V(T) at zero pressure, its curvature the
isothermal bulk modulus B(T); the volumetric expansion coefficient is
``alpha = d ln V / dT`` (central differences over the temperature grid: give a fine one).
A temperature whose minimum leaves the sampled volumes (a crystal near melting, or too narrow
a range) gets NaN and is named in ``outside``. Zero-point motion is included: V(0 K) lies
above the static minimum. Units: Å^3 and eV per cell, GPa, 1/K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms, units

from equiforce.md.eos import MIN_VOLUMES, volume_ratios


@dataclass(frozen=True)
class QuasiHarmonicResult:
    """The crystal's equilibrium against temperature (module docstring).

    Attributes:
        temperature: (n_T,) K.
        volume: (n_T,) V(T), Å^3 per cell (NaN outside the sampled volumes).
        bulk_modulus: (n_T,) B(T), GPa.
        expansion: (n_T,) alpha(T) = d ln V / dT, 1/K (volumetric; linear: a third of it
            for a cubic crystal).
        free_energy: (n_T,) F at V(T), eV per cell.
        volumes: (n_V,) the sampled volumes, Å^3.
        static_energy: (n_V,) E(V), eV.
        vibrational_free_energy: (n_V, n_T) F_vib(V, T), eV.
        outside: the temperatures whose minimum left the sampled volumes, K.
        static_volume: the minimum of E(V) alone (the same equation of state), Å^3.
    """

    temperature: np.ndarray
    volume: np.ndarray
    bulk_modulus: np.ndarray
    expansion: np.ndarray
    free_energy: np.ndarray
    volumes: np.ndarray
    static_energy: np.ndarray
    vibrational_free_energy: np.ndarray
    outside: tuple[float, ...]
    static_volume: float


def equilibrium_volumes(
    volumes: np.ndarray,
    static_energy: np.ndarray,
    vibrational_free_energy: np.ndarray,
    temperatures: np.ndarray,
) -> QuasiHarmonicResult:
    """V(T), B(T), alpha(T) from the free energy at sampled volumes (module docstring).

    Args:
        volumes: (n_V,) Å^3, at least ``MIN_VOLUMES``.
        static_energy: (n_V,) eV.
        vibrational_free_energy: (n_V, n_T) eV.
        temperatures: (n_T,) K, ascending.

    Raises:
        ValueError: too few volumes, or temperatures not ascending.
    """
    from ase.eos import EquationOfState

    volumes, temperatures = np.asarray(volumes, float), np.asarray(temperatures, float)
    if len(volumes) < MIN_VOLUMES:
        raise ValueError(f"{len(volumes)} volumes: the equation of state needs {MIN_VOLUMES}")
    if len(temperatures) > 1 and not (np.diff(temperatures) > 0).all():
        raise ValueError(f"temperatures must ascend, got {temperatures.tolist()}")
    n_t = len(temperatures)
    volume, bulk, free = (np.full(n_t, np.nan) for _ in range(3))
    for index in range(n_t):
        energies = static_energy + vibrational_free_energy[:, index]
        try:
            fitted = EquationOfState(volumes, energies, eos="birchmurnaghan").fit(warn=False)
        except (RuntimeError, ValueError):  # no minimum the curve could describe
            continue
        minimum, lowest, curvature = fitted
        if volumes.min() < minimum < volumes.max():
            volume[index], free[index], bulk[index] = minimum, lowest, curvature / units.GPa
    expansion = np.full(n_t, np.nan)
    if n_t > 1:
        expansion = np.gradient(np.log(volume), temperatures)
    outside = tuple(float(t) for t in temperatures[np.isnan(volume)])
    static_volume = EquationOfState(volumes, static_energy, eos="birchmurnaghan").fit(warn=False)
    return QuasiHarmonicResult(
        temperature=temperatures,
        volume=volume,
        bulk_modulus=bulk,
        expansion=expansion,
        free_energy=free,
        volumes=volumes,
        static_energy=np.asarray(static_energy, float),
        vibrational_free_energy=np.asarray(vibrational_free_energy, float),
        outside=outside,
        static_volume=float(static_volume[0]),
    )


def quasi_harmonic(
    crystal: Atoms,
    calculator,
    supercell: tuple[int, int, int],
    mesh: tuple[int, int, int],
    temperatures: Sequence[float],
    n_volumes: int = 7,
    volume_range: float = 0.04,
) -> QuasiHarmonicResult:
    """The quasi-harmonic equilibrium of ``crystal`` (module docstring).

    Args:
        crystal: the crystal, relaxed (its volume is the middle of the sampled ones).
        calculator: an ``EquiforceCalculator`` (a model file: its Hessians).
        supercell: repetitions for the force constants.
        mesh: wave vectors of the free energy.
        temperatures: ascending, K.
        n_volumes: volumes sampled, at least ``MIN_VOLUMES``.
        volume_range: the largest relative change of the volume (0.04: -4 % to +4 %).

    Raises:
        ValueError: too few volumes, a range outside (0, 0.3), or not periodic in 3D.
        RuntimeError: a constant-volume relaxation that did not converge.
    """
    from equiforce.md.phonons import force_constants, thermal_properties
    from equiforce.md.relax import relaxed_crystal

    ratios = volume_ratios(n_volumes, volume_range)
    temperatures = np.asarray(temperatures, dtype=np.float64)
    volumes, static, vibrational = [], [], []
    for ratio in ratios:
        result = relaxed_crystal(crystal, calculator, volume_ratio=ratio)
        relaxed = result.atoms
        model = force_constants(relaxed, calculator, supercell)
        thermal = thermal_properties(model, mesh, temperatures)
        volumes.append(relaxed.get_volume())
        static.append(result.energy)
        vibrational.append(thermal.free_energy)
    return equilibrium_volumes(
        np.array(volumes), np.array(static), np.array(vibrational), temperatures
    )
