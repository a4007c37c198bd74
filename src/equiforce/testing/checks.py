"""Physics checks shared by every model family's tests.

Each function evaluates a ``Potential`` on ``ase.Atoms`` built into graphs with the model's own
type names and cutoff, so the checks exercise the whole pipeline (neighbour list included).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.potential import Potential


def predict(
    model: Potential, structures: Sequence[Atoms], stress: bool = False
) -> dict[str, np.ndarray]:
    """Energy (n_graphs,), forces (n_atoms, 3), optionally stress (n_graphs, 3, 3) in float64,
    and every optional output the energy model declares (``node_features``, ...)."""
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in structures
    ]
    out = model(
        collate(graphs),
        compute_forces=True,
        compute_stress=stress,
        create_graph=False,
        extra_outputs=model.energy_model.outputs - {keys.NODE_ENERGY},
    )
    return {name: value.detach().numpy() for name, value in out.items()}


def random_orthogonal(seed: int, reflect: bool) -> np.ndarray:
    """A random 3x3 rotation, times -1 (an improper rotation) when ``reflect``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def transformed(atoms: Atoms, matrix: np.ndarray, translation: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with positions and cell mapped by ``x -> x @ matrix.T + translation``."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    out.positions = atoms.positions @ matrix.T + translation
    return out


def permuted(atoms: Atoms, permutation: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with atoms reordered by ``permutation``."""
    out = atoms[permutation]
    out.set_cell(atoms.cell)
    out.pbc = atoms.pbc
    return out


def finite_difference_forces(model: Potential, atoms: Atoms, step: float = 1e-4) -> np.ndarray:
    """Central-difference ``-dE/dx`` (n_atoms, 3), eV/Å, in float64."""
    forces = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for d in range(3):
            energies = []
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[a, d] += sign * step
                energies.append(predict(model, [moved])[keys.ENERGY][0])
            forces[a, d] = -(energies[0] - energies[1]) / (2 * step)
    return forces


def finite_difference_stress(model: Potential, atoms: Atoms, step: float = 1e-5) -> np.ndarray:
    """Central-difference ``(1/V) dE/d(strain)`` (3, 3), eV/Å^3, ASE sign, symmetric strain."""
    volume = abs(np.linalg.det(atoms.cell.array))
    stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1.0, -1.0):
                strain = np.eye(3)
                strain[i, j] += 0.5 * sign * step
                strain[j, i] += 0.5 * sign * step
                moved = atoms.copy()
                moved.set_cell(atoms.cell.array @ strain, scale_atoms=False)
                moved.positions = atoms.positions @ strain
                energies.append(predict(model, [moved])[keys.ENERGY][0])
            stress[i, j] = (energies[0] - energies[1]) / (2 * step) / volume
    return stress


def atoms_beyond_cutoff_moved(atoms: Atoms, index: int, r_max: float) -> Atoms:
    """Copy of ``atoms`` (non-periodic) with atom ``index`` moved > 2 ``r_max`` from all others."""
    out = atoms.copy()
    centre = np.delete(atoms.positions, index, axis=0).mean(axis=0)
    extent = np.linalg.norm(np.delete(atoms.positions, index, axis=0) - centre, axis=1).max()
    out.positions[index] = centre + np.array([extent + 2.5 * r_max, 0.0, 0.0])
    return out


def model_dtype_matches(model: Potential, dtype: torch.dtype) -> bool:
    """True when every floating parameter and buffer of ``model`` has ``dtype``."""
    tensors = list(model.parameters()) + list(model.buffers())
    return all(t.dtype == dtype for t in tensors if t.is_floating_point())
