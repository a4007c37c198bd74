"""Elastic constants of a crystal from the stress of strained cells, and the moduli they give.

``elastic_constants`` strains the cell by each of the six Voigt strains (xx, yy, zz, yz, xz,
xy; shear ones as engineering strains: ``epsilon_yz = gamma / 2``) at the magnitudes given
(default +-0.5 % and +-1 %), relaxes the atoms inside each strained cell (relaxed-ion
constants, as DFT codes and pymatgen/matcalc report them; ``relax_ions=False`` gives the
clamped-ion ones), and fits each stress component's slope against the strain:
``C_ij = d sigma_i / d epsilon_j`` (least squares through all magnitudes; symmetric +-
magnitudes cancel the quadratic term). The matrix is symmetrised, ``(C + C^T) / 2``; the
asymmetry it had is reported (a measure of the fit's and the relaxations' noise).

Moduli: Voigt's and Reuss's bounds of the bulk and shear moduli, Hill's averages, Young's
modulus and Poisson's ratio from Hill's; the crystal is mechanically stable (Born) when every
eigenvalue of C is positive. Units: GPa (ASE's stress sign: tensile positive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms, units

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # the 3 x 3 index of each component
DEFAULT_STRAINS = (-0.01, -0.005, 0.005, 0.01)


@dataclass(frozen=True)
class ElasticResult:
    """Elastic constants and moduli of a crystal.

    Attributes:
        constants: (6, 6) C_ij, GPa, Voigt order xx, yy, zz, yz, xz, xy (symmetrised).
        asymmetry: largest |C_ij - C_ji| / 2 before symmetrising, GPa.
        bulk_voigt, bulk_reuss, bulk_hill: bulk modulus bounds and average, GPa.
        shear_voigt, shear_reuss, shear_hill: shear modulus bounds and average, GPa.
        young: Young's modulus (Hill), GPa.
        poisson: Poisson's ratio (Hill).
        stable: Born's criterion: every eigenvalue of C positive.
        relaxed_ions: whether the atoms relaxed in each strained cell.
        max_force: the largest force left after those relaxations, eV/Å.
    """

    constants: np.ndarray
    asymmetry: float
    bulk_voigt: float
    bulk_reuss: float
    bulk_hill: float
    shear_voigt: float
    shear_reuss: float
    shear_hill: float
    young: float
    poisson: float
    stable: bool
    relaxed_ions: bool
    max_force: float


def elastic_constants(
    atoms: Atoms,
    calculator,
    strains: Sequence[float] = DEFAULT_STRAINS,
    relax_ions: bool = True,
    fmax: float = 1e-4,
    steps: int = 1000,
) -> ElasticResult:
    """The elastic constants of a relaxed crystal (module docstring).

    Args:
        atoms: a 3D-periodic crystal at its equilibrium (cell relaxed: its stress is the
            reference every strain's stress is measured from).
        calculator: any ASE calculator with stress.
        strains: the strain magnitudes, at least two distinct (the slope), none zero.
        relax_ions: relax the atoms in each strained cell (BFGS to ``fmax``).
        fmax: their force threshold, eV/Å.
        steps: the most optimizer steps of each relaxation.

    Raises:
        ValueError: not periodic in 3D, or fewer than two distinct strains, or a zero strain.
        RuntimeError: an ion relaxation that did not converge (its strain named).
    """
    magnitudes = np.asarray(strains, dtype=np.float64)
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise ValueError(
            f"{atoms.get_chemical_formula()}: elastic constants need a crystal periodic in 3D"
        )
    if len(np.unique(magnitudes)) < 2 or (magnitudes == 0).any():
        raise ValueError(f"strains {tuple(strains)}: give two or more distinct, non-zero ones")
    stresses = np.empty((6, len(magnitudes), 6))
    max_force = 0.0
    for j, (a, b) in enumerate(VOIGT):
        for k, magnitude in enumerate(magnitudes):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = magnitude if a == b else magnitude / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            strained.calc = calculator
            if relax_ions:
                max_force = max(max_force, _relax_ions(strained, fmax, steps, j, magnitude))
            stresses[j, k] = strained.get_stress() / units.GPa  # Voigt: xx yy zz yz xz xy
    slopes = np.array(
        [[np.polyfit(magnitudes, stresses[j, :, i], 1)[0] for j in range(6)] for i in range(6)]
    )
    return _moduli(slopes, relax_ions, max_force)


def _relax_ions(atoms: Atoms, fmax: float, steps: int, component: int, magnitude: float) -> float:
    """Relax the atoms at fixed cell; the largest force left, eV/Å.

    Raises:
        RuntimeError: not converged (the strain named).
    """
    from ase.optimize import BFGS

    optimizer = BFGS(atoms, logfile=None)
    if not optimizer.run(fmax=fmax, steps=steps):
        raise RuntimeError(
            f"{atoms.get_chemical_formula()}: the atoms did not relax below fmax {fmax} eV/Å "
            f"in {steps} steps under strain {magnitude} of Voigt component {component}"
        )
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max(initial=0.0))


def _moduli(slopes: np.ndarray, relax_ions: bool, max_force: float) -> ElasticResult:
    """The result of the fitted (6, 6) slopes, GPa (module docstring)."""
    constants = (slopes + slopes.T) / 2
    c, s = constants, np.linalg.inv(constants)
    normal, off, shear = np.arange(3), [(0, 1), (0, 2), (1, 2)], np.arange(3, 6)
    c_normal, c_off = c[normal, normal].sum(), sum(c[i, j] for i, j in off)
    s_normal, s_off = s[normal, normal].sum(), sum(s[i, j] for i, j in off)
    bulk_voigt = (c_normal + 2 * c_off) / 9
    bulk_reuss = 1 / (s_normal + 2 * s_off)
    shear_voigt = (c_normal - c_off + 3 * c[shear, shear].sum()) / 15
    shear_reuss = 15 / (4 * s_normal - 4 * s_off + 3 * s[shear, shear].sum())
    bulk, shear_modulus = (bulk_voigt + bulk_reuss) / 2, (shear_voigt + shear_reuss) / 2
    return ElasticResult(
        constants=constants,
        asymmetry=float(np.abs(slopes - slopes.T).max() / 2),
        bulk_voigt=float(bulk_voigt),
        bulk_reuss=float(bulk_reuss),
        bulk_hill=float(bulk),
        shear_voigt=float(shear_voigt),
        shear_reuss=float(shear_reuss),
        shear_hill=float(shear_modulus),
        young=float(9 * bulk * shear_modulus / (3 * bulk + shear_modulus)),
        poisson=float((3 * bulk - 2 * shear_modulus) / (2 * (3 * bulk + shear_modulus))),
        stable=bool(np.linalg.eigvalsh(constants).min() > 0),
        relaxed_ions=relax_ions,
        max_force=max_force,
    )
