"""Saddle points (transition states) from a guess, by partitioned rational-function
optimisation (P-RFO: Baker, J. Comput. Chem. 7, 385 (1986); Banerjee, Adams, Simons &
Shepard, J. Phys. Chem. 89, 52 (1985)) on the exact Hessian.

Each step takes the moving atoms' Hessian by double backward
(``EquiforceCalculator.get_hessian``), removes the rigid-body motions
(``equiforce.md.vibrations.rigid_body_basis``: a molecule's translations and rotations, a
periodic structure's translations, none with fixed atoms) and diagonalises the rest. Along
one eigenvector, the *followed mode* (the lowest at the start, then the one overlapping most
with the last step's), the step maximises the energy's rational-function model; along all
others it minimises it, so the structure climbs to a first-order saddle point and no other
(Baker's shifts: ``lambda_p`` above the followed curvature, ``lambda_n`` below the others,
the lowest eigenvalue of their augmented Hessian). A step longer than ``max_step`` for any
atom is scaled down. With the exact Hessian at every step the last steps converge
quadratically, where the dimer method or a climbing image converge linearly; the cost is
3 k Hessian-vector products a step (k moving atoms): made for molecules, clusters, defects
and adsorbates of up to a few hundred atoms.

Converged: the largest force below ``fmax`` with exactly one negative curvature. A good
guess is a NEB's highest image (``equiforce neb --no-climb``, or its climbing image to refine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms

from equiforce.md.relax import frozen_copy
from equiforce.md.vibrations import (
    moving_atoms,
    orthogonal_complement,
    require_hessian,
    rigid_body_basis,
)


@dataclass(frozen=True)
class SaddleResult:
    """A saddle point search.

    Attributes:
        atoms: the final structure with a ``SinglePointCalculator`` (energy eV, forces
            eV/Å).
        converged: the largest force below ``fmax`` and exactly one negative curvature.
        n_steps: steps taken.
        fmax: the largest force norm at the end, eV/Å.
        curvatures: (m,) eV/Å^2, the eigenvalues of the final Hessian (rigid-body motions
            removed), ascending: the exact one's at convergence.
        mode: (n_atoms, 3) the followed mode at the end, unit length (zero on fixed atoms).
        hessians: exact Hessians taken (Bofill's updates in between with ``hessian_every``
            other than 1).
    """

    atoms: Atoms
    converged: bool
    n_steps: int
    fmax: float
    curvatures: np.ndarray
    mode: np.ndarray
    hessians: int

    @property
    def negative_modes(self) -> int:
        """Curvatures below zero (1 at a first-order saddle point)."""
        return int((self.curvatures < 0).sum())


def find_saddle(
    atoms: Atoms,
    calculator,
    fmax: float = 1e-3,
    steps: int = 200,
    max_step: float = 0.1,
    indices: Sequence[int] | None = None,
    hessian_every: int = 1,
) -> SaddleResult:
    """Climb from ``atoms`` to a first-order saddle point (module docstring).

    Args:
        atoms: the guess (not modified).
        calculator: an ``EquiforceCalculator`` over a model file (the Hessian needs it).
        fmax: convergence threshold of the largest force, eV/Å.
        steps: most steps.
        max_step: the largest displacement of any atom in one step, Å.
        indices: the atoms that move (None: those no ``FixAtoms`` holds).
        hessian_every: the exact Hessian every this many steps, Bofill's update of it from
            the gradients in between (Bofill, Int. J. Quantum Chem. 52, 1067 (1994)); 0: only
            at the start. The exact one confirms a converged saddle point either way. 1 (the
            default) is quadratic convergence at 3 k Hessian-vector products a step; larger
            values trade steps for Hessians (large systems).

    Raises:
        ValueError: a bad option, no atom to move or an index out of range.
    """
    if not fmax > 0 or steps < 0 or not max_step > 0 or hessian_every < 0:
        raise ValueError(
            f"fmax {fmax}, steps {steps}, max_step {max_step}, hessian_every {hessian_every}: "
            "need positive fmax and max_step, steps >= 0, hessian_every >= 0"
        )
    require_hessian(calculator)
    structure = atoms.copy()
    structure.calc = calculator
    indices = moving_atoms(atoms, indices)
    columns = (3 * np.array(indices)[:, None] + np.arange(3)).ravel()

    def exact() -> np.ndarray:
        rows = calculator.get_hessian(structure, rows_of=indices)[:, columns]
        return (rows + rows.T) / 2

    followed = displacement = previous = None
    hessians = 0
    for step in range(steps + 1):
        gradient = -structure.get_forces(apply_constraint=False)[indices].ravel()
        is_exact = previous is None or (hessian_every > 0 and step % hessian_every == 0)
        if is_exact:
            hessian, hessians = exact(), hessians + 1
        else:
            hessian = _bofill(hessian, displacement, gradient - previous)
        curvatures, modes = _internal_modes(hessian, structure, len(indices))
        largest = float(np.linalg.norm(gradient.reshape(-1, 3), axis=1).max())
        done = largest < fmax and (curvatures < 0).sum() == 1
        if done and not is_exact:  # confirmed on the exact Hessian
            hessian, hessians = exact(), hessians + 1
            curvatures, modes = _internal_modes(hessian, structure, len(indices))
            done = (curvatures < 0).sum() == 1
        if done or step == steps:
            break
        k = 0 if followed is None else int(np.argmax(np.abs(modes.T @ followed)))
        followed = modes[:, k]
        displacement = modes @ _prfo_step(curvatures, modes.T @ gradient, k)
        longest = np.linalg.norm(displacement.reshape(-1, 3), axis=1).max()
        if longest > max_step:
            displacement *= max_step / longest
        positions = structure.get_positions()
        positions[indices] += displacement.reshape(-1, 3)
        structure.set_positions(positions, apply_constraint=False)
        previous = gradient
    k = 0 if followed is None else int(np.argmax(np.abs(modes.T @ followed)))
    mode = np.zeros((len(structure), 3))
    mode[indices] = modes[:, k].reshape(-1, 3)
    forces = structure.get_forces()
    return SaddleResult(
        atoms=frozen_copy(structure, structure.get_potential_energy(), forces, None),
        converged=bool(done),
        n_steps=step,
        fmax=largest,
        curvatures=curvatures,
        mode=mode,
        hessians=hessians,
    )


def _internal_modes(
    hessian: np.ndarray, structure: Atoms, n_moving: int
) -> tuple[np.ndarray, np.ndarray]:
    """The curvatures (m,) eV/Å^2 and Cartesian unit modes (3 k, m) of ``hessian`` (3 k, 3 k)
    without the rigid-body motions (all atoms moving: a molecule's 6, a cell's 3)."""
    rigid = (
        rigid_body_basis(structure, mass_weighted=False)
        if n_moving == len(structure)
        else np.zeros((len(hessian), 0))
    )
    basis = orthogonal_complement(rigid)  # (3 k, m) the internal motions
    curvatures, vectors = np.linalg.eigh(basis.T @ hessian @ basis)
    return curvatures, basis @ vectors


def _bofill(hessian: np.ndarray, step: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Bofill's update of a Hessian (n, n) from a step (n,) Å and the gradient's change
    (n,) eV/Å: Murtagh-Sargent's symmetric rank one and Powell's symmetric Broyden mixed by
    ``phi = (xi . s)^2 / (|xi|^2 |s|^2)``, xi = change - H s; no indefiniteness imposed (a
    saddle point's Hessian has a negative curvature)."""
    xi = change - hessian @ step
    ss, xs, xx = step @ step, xi @ step, xi @ xi
    if ss == 0 or xx == 0:
        return hessian
    powell = (
        hessian + (np.outer(xi, step) + np.outer(step, xi)) / ss - xs * np.outer(step, step) / ss**2
    )
    phi = xs**2 / (xx * ss)
    if phi == 0:
        return powell
    return phi * (hessian + np.outer(xi, xi) / xs) + (1 - phi) * powell


def _prfo_step(curvatures: np.ndarray, gradient: np.ndarray, k: int) -> np.ndarray:
    """Baker's P-RFO step in the eigenbasis: up along mode ``k``, down along the others.

    Args:
        curvatures: (m,) the Hessian's eigenvalues, eV/Å^2.
        gradient: (m,) the gradient's components along the eigenvectors, eV/Å.
        k: the followed mode.

    Returns:
        (m,) the step's components, Å.
    """
    step = np.zeros_like(gradient)
    b, f = curvatures[k], gradient[k]
    shift = b / 2 + np.sqrt(b**2 / 4 + f**2)  # lambda_p >= b, > b unless f = 0
    if shift != b:
        step[k] = -f / (b - shift)
    others = np.arange(len(curvatures)) != k
    if others.any():
        b, f = curvatures[others], gradient[others]
        augmented = np.block([[np.diag(b), f[:, None]], [f[None, :], np.zeros((1, 1))]])
        shift = np.linalg.eigvalsh(augmented)[0]  # lambda_n <= min(b), below it unless f = 0
        denominators = b - shift
        safe = np.abs(denominators) > 1e-12
        step[others] = np.where(safe, -f / np.where(safe, denominators, 1.0), 0.0)
    return step
