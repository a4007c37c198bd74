"""Vibrational analysis from the exact Hessian: normal modes, zero-point energy and harmonic
thermochemistry of a molecule, a cluster, an adsorbate or a transition state.

``vibrations`` takes the Hessian by double backward (``EquiforceCalculator.get_hessian``; no
finite displacements, so no step and no noise) of the atoms that move (by default those
``FixAtoms`` leaves free), mass-weights it and projects out the rigid-body motions: for a
molecule or cluster (no periodic axis, every atom free) the 3 translations and the 3
rotations (2 for a linear molecule) about the centre of mass, for a periodic structure the 3
translations; an adsorbate on a fixed substrate keeps all its 3 k modes. What is left are
exactly the internal modes, each an eigenvalue of the projected Hessian ``P H P`` restricted
to the complement of the rigid-body motions: the rotations of a structure not quite at its
minimum (a Cu13 cluster with forces of 0.03 eV/Å: rotational "frequencies" up to 3.5i cm^-1)
no longer mix into the low vibrations, as in the quantum chemistry codes' Eckart projection,
and the internal frequencies do not depend on the structure's orientation. The result
carries ASE's ``VibrationsData`` of the projected Hessian (modes, ``tabulate``,
``write_jmol``), the internal energies and, for the thermochemistry, ASE's ideal-gas
(``IdealGasThermo``: H, S, G of a molecule at a temperature and pressure) or harmonic
(``HarmonicThermo``: U, S, F of an adsorbate or a solid) treatment of them.

An imaginary mode (a negative eigenvalue) is given as a negative frequency; a transition
state has exactly one, whose mode the thermochemistry of transition-state theory leaves out
(``transition_state=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms, units

# rigid-body directions whose singular value is below this fraction of the largest are
# dependent (the third rotation of a linear molecule, all rotations of one atom)
RIGID_BODY_TOLERANCE = 1e-6
# hbar sqrt(eV / (Å^2 amu)) in eV: the energy of a unit mass-weighted eigenvalue
EV_PER_ROOT_EIGENVALUE = units._hbar * 1e10 / np.sqrt(units._e * units._amu)
PLANCK_EV_S = units._hplanck / units._e  # h in eV s: a quantum's frequency is E / h


@dataclass(frozen=True)
class VibrationResult:
    """The vibrations of a structure.

    Attributes:
        data: ASE's ``VibrationsData`` of the projected Hessian (eV/Å^2) of the moving
            atoms: its modes, ``get_frequencies`` (cm^-1, complex: imaginary ones as
            imaginary numbers), ``tabulate()``, ``write_jmol(path)``.
        energies: (n_internal,) complex eV, the internal modes' quanta hbar omega, ascending
            by their square (imaginary ones first); n_internal = 3 k minus the projected
            rigid-body motions.
        rigid_body: rigid-body motions projected out (6, 5 for a linear molecule, 3 for a
            periodic structure, 0 with fixed atoms; 3 for a single free atom).
        geometry: ``"nonlinear"``, ``"linear"`` or ``"monatomic"`` for a free molecule, else
            None (ideal-gas thermochemistry applies to free molecules only).
        max_force: the largest force on the moving atoms, eV/Å (not a stationary point
            where it is large).
        potential_energy: eV.
    """

    data: object
    energies: np.ndarray
    rigid_body: int
    geometry: str | None
    max_force: float
    potential_energy: float

    @property
    def frequencies(self) -> np.ndarray:
        """(n_internal,) cm^-1, an imaginary mode as a negative number."""
        values = self.energies / units.invcm
        return np.where(np.abs(values.imag) > 0, -np.abs(values.imag), values.real)

    @property
    def imaginary_modes(self) -> int:
        """Internal modes with a negative eigenvalue (1 at a first-order saddle point)."""
        return int((np.abs(self.energies.imag) > 0).sum())

    @property
    def zero_point_energy(self) -> float:
        """Half the summed real quanta of the internal modes, eV."""
        return float(self.energies.real.sum() / 2)


def vibrations(atoms: Atoms, calculator, indices: Sequence[int] | None = None) -> VibrationResult:
    """The internal vibrations of ``atoms`` (module docstring).

    Args:
        atoms: the structure, at a minimum or a saddle point (relax it first).
        calculator: an ``EquiforceCalculator`` (a model file: the Hessian needs the model).
        indices: the atoms that move (None: those no ``FixAtoms`` holds).

    Raises:
        ValueError: no atom moves, or an index out of range.
    """
    from ase.vibrations import VibrationsData

    require_hessian(calculator)
    indices = moving_atoms(atoms, indices)
    structure = atoms.copy()
    structure.calc = calculator
    forces = structure.get_forces(apply_constraint=False)[indices]
    rows = calculator.get_hessian(structure, rows_of=indices)  # (3 k, 3 n)
    columns = (3 * np.array(indices)[:, None] + np.arange(3)).ravel()
    hessian = (rows[:, columns] + rows[:, columns].T) / 2
    weights = np.repeat(1 / np.sqrt(atoms.get_masses()[indices]), 3)
    weighted = hessian * np.outer(weights, weights)
    everyone = len(indices) == len(atoms)
    rigid = rigid_body_basis(atoms) if everyone else np.zeros((len(weighted), 0))
    complement = orthogonal_complement(rigid)
    eigenvalues = np.linalg.eigvalsh(complement.T @ weighted @ complement)
    projector = np.eye(len(weighted)) - rigid @ rigid.T
    projected = projector @ weighted @ projector / np.outer(weights, weights)
    geometry = None
    if everyone and not atoms.pbc.any():
        geometry = {3: "monatomic", 5: "linear"}.get(rigid.shape[1], "nonlinear")
    return VibrationResult(
        data=VibrationsData.from_2d(atoms, projected, indices=indices),
        energies=EV_PER_ROOT_EIGENVALUE * np.emath.sqrt(eigenvalues).astype(complex),
        rigid_body=rigid.shape[1],
        geometry=geometry,
        max_force=float(np.linalg.norm(forces, axis=1).max()),
        potential_energy=float(structure.get_potential_energy()),
    )


def require_hessian(calculator) -> None:
    """Raise a ``ValueError`` unless ``calculator`` gives the exact Hessian
    (``get_hessian``: an ``EquiforceCalculator`` over a model file, or it with D3)."""
    if not callable(getattr(calculator, "get_hessian", None)):
        raise ValueError(
            f"{type(calculator).__name__} has no exact Hessian: give one model file (not a "
            "committee)"
        )


def moving_atoms(atoms: Atoms, indices: Sequence[int] | None) -> list[int]:
    """``indices`` checked, or (None) the atoms no ``FixAtoms`` holds.

    Raises:
        ValueError: no atom moves, or an index out of range.
    """
    from ase.constraints import FixAtoms

    if indices is None:
        fixed = {int(i) for c in atoms.constraints if isinstance(c, FixAtoms) for i in c.index}
        indices = [i for i in range(len(atoms)) if i not in fixed]
    indices = [int(i) for i in indices]
    if not indices or min(indices) < 0 or max(indices) >= len(atoms):
        raise ValueError(f"the moving atoms must be some of 0..{len(atoms) - 1}, got {indices}")
    return indices


def rigid_body_basis(atoms: Atoms, mass_weighted: bool = True) -> np.ndarray:
    """Orthonormal rigid-body motions of ``atoms``: (3 n, k), the 3 translations, and for a
    structure without periodic axes the rotations about its centre of mass (2 for a linear
    molecule, none for one atom); in mass-weighted coordinates, or Cartesian ones."""
    masses = atoms.get_masses()
    roots = np.sqrt(masses)[:, None] if mass_weighted else np.ones((len(atoms), 1))
    directions = [roots * np.eye(3)[axis] for axis in range(3)]
    if not atoms.pbc.any():
        arms = atoms.positions - atoms.get_center_of_mass()
        directions += [roots * np.cross(np.eye(3)[axis], arms) for axis in range(3)]
    matrix = np.stack([direction.ravel() for direction in directions], axis=1)
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    return left[:, singular > RIGID_BODY_TOLERANCE * singular.max()]


def orthogonal_complement(basis: np.ndarray) -> np.ndarray:
    """(m, m - k) orthonormal columns orthogonal to the k orthonormal columns of ``basis``."""
    size, rank = basis.shape
    if rank == 0:
        return np.eye(size)
    full, _, _ = np.linalg.svd(basis, full_matrices=True)
    return full[:, rank:]


@dataclass(frozen=True)
class Thermochemistry:
    """Harmonic thermochemistry at each temperature, eV (entropy eV/K).

    Attributes:
        temperature: (n_T,) K.
        enthalpy: (n_T,) H of an ideal gas (U + kT), or U of a harmonic system, eV.
        entropy: (n_T,) S, eV/K.
        free_energy: (n_T,) G = H - T S of an ideal gas, F = U - T S otherwise, eV.
        model: ``"ideal-gas"`` or ``"harmonic"``.
        pressure: Pa (ideal gas), else None.
    """

    temperature: np.ndarray
    enthalpy: np.ndarray
    entropy: np.ndarray
    free_energy: np.ndarray
    model: str
    pressure: float | None


def thermochemistry(
    result: VibrationResult,
    atoms: Atoms,
    temperatures: Sequence[float],
    pressure: float = 101325.0,
    symmetry_number: int = 1,
    spin: float = 0.0,
    transition_state: bool = False,
) -> Thermochemistry:
    """ASE's ideal-gas thermochemistry of a free molecule (``result.geometry`` set), its
    harmonic one otherwise, from the internal modes; the potential energy included.

    Args:
        result: ``vibrations``' result for ``atoms``.
        atoms: the structure (masses and moments of inertia of a molecule).
        temperatures: K, each > 0.
        pressure: Pa (ideal gas only).
        symmetry_number: rotational symmetry number (ideal gas; 2 for water, 12 for
            methane).
        spin: total electronic spin (ideal gas; 0 closed shell, 0.5 a radical, 1 triplet).
        transition_state: leave out the one imaginary mode, as transition-state theory does.

    Raises:
        ValueError: imaginary modes other than a transition state's one (named), or a
            temperature <= 0.
    """
    from ase.thermochemistry import HarmonicThermo, IdealGasThermo

    energies = result.energies
    expected = 1 if transition_state else 0
    if result.imaginary_modes != expected:
        what = "a transition state has exactly 1" if transition_state else "a minimum has none"
        raise ValueError(
            f"{result.imaginary_modes} imaginary modes ({result.frequencies[:3].round(1)} "
            f"cm^-1 lowest): {what}"
        )
    energies = energies[expected:].real
    if min(temperatures) <= 0:
        raise ValueError(f"temperatures must be > 0 K, got {list(temperatures)}")
    rows = []
    if result.geometry is not None:
        gas = IdealGasThermo(
            vib_energies=energies,
            geometry=result.geometry,
            potentialenergy=result.potential_energy,
            atoms=atoms,
            symmetrynumber=symmetry_number,
            spin=spin,
            vib_selection="all",
        )
        for temperature in temperatures:
            rows.append(
                (
                    gas.get_enthalpy(temperature, verbose=False),
                    gas.get_entropy(temperature, pressure, verbose=False),
                    gas.get_gibbs_energy(temperature, pressure, verbose=False),
                )
            )
        model, used_pressure = "ideal-gas", pressure
    else:
        solid = HarmonicThermo(vib_energies=energies, potentialenergy=result.potential_energy)
        for temperature in temperatures:
            rows.append(
                (
                    solid.get_internal_energy(temperature, verbose=False),
                    solid.get_entropy(temperature, verbose=False),
                    solid.get_helmholtz_energy(temperature, verbose=False),
                )
            )
        model, used_pressure = "harmonic", None
    table = np.array(rows)
    return Thermochemistry(
        temperature=np.asarray(temperatures, dtype=np.float64),
        enthalpy=table[:, 0],
        entropy=table[:, 1],
        free_energy=table[:, 2],
        model=model,
        pressure=used_pressure,
    )


@dataclass(frozen=True)
class TransitionRates:
    """Harmonic transition-state theory rates of crossing one saddle point from a minimum.

    Attributes:
        barrier: E_saddle - E_minimum, eV.
        prefactor: Vineyard's attempt frequency, Hz: the product of the minimum's M real
            mode frequencies over the product of the saddle's M - 1 (Vineyard, J. Phys.
            Chem. Solids 3, 121 (1957)).
        temperature: (n_T,) K.
        classical: (n_T,) 1/s, ``prefactor exp(-barrier / kT)``.
        quantum: (n_T,) 1/s, ``kT/h exp(-(F_saddle - F_minimum) / kT)`` with each side's
            quantum harmonic free energy (zero-point energy included, the saddle's
            imaginary mode left out): the classical rate at high temperature, the tunnelling
            aside.
    """

    barrier: float
    prefactor: float
    temperature: np.ndarray
    classical: np.ndarray
    quantum: np.ndarray


def transition_rates(
    minimum: VibrationResult, saddle: VibrationResult, temperatures: Sequence[float]
) -> TransitionRates:
    """Harmonic transition-state theory from a minimum's and a saddle point's vibrations
    (the same moving atoms; rigid-body motions projected alike).

    Raises:
        ValueError: the minimum has an imaginary mode or the saddle not exactly one, their
            mode counts do not match, or a temperature <= 0.
    """
    if minimum.imaginary_modes != 0 or saddle.imaginary_modes != 1:
        raise ValueError(
            f"need a minimum (has {minimum.imaginary_modes} imaginary modes) and a first-order "
            f"saddle point (has {saddle.imaginary_modes})"
        )
    if len(minimum.energies) != len(saddle.energies):
        raise ValueError(
            f"the minimum has {len(minimum.energies)} modes and the saddle point "
            f"{len(saddle.energies)}: not the same moving atoms"
        )
    temperatures = np.asarray(temperatures, dtype=np.float64)
    if temperatures.min() <= 0:
        raise ValueError(f"temperatures must be > 0 K, got {temperatures.tolist()}")
    initial, crossing = minimum.energies.real, saddle.energies[1:].real  # quanta, eV
    # ln(prod nu_minimum / prod nu_saddle), nu = quantum / h
    log_prefactor = (
        np.log(initial).sum() - np.log(crossing).sum() - np.log(units._hplanck / units._e)
    )
    barrier = saddle.potential_energy - minimum.potential_energy
    thermal = units.kB * temperatures
    classical = np.exp(log_prefactor - barrier / thermal)

    def free_energy(quanta: np.ndarray) -> np.ndarray:  # zero point + thermal, per T
        return quanta.sum() / 2 + thermal * np.log1p(
            -np.exp(-quanta[None, :] / thermal[:, None])
        ).sum(axis=1)

    difference = barrier + free_energy(crossing) - free_energy(initial)
    attempt = thermal / PLANCK_EV_S  # kT / h, Hz
    return TransitionRates(
        barrier=float(barrier),
        prefactor=float(np.exp(log_prefactor)),
        temperature=temperatures,
        classical=classical,
        quantum=attempt * np.exp(-difference / thermal),
    )
