"""Reference heat-flux (centroid) virials: per-atom energies on explicit copies, autograd.

``W_k = sum_i sum_c (x_i - x_k^c) (x) dE_i/dx_k^c`` (eV; a of the position, b of the gradient):
the per-atom virial of the heat flux ``J = sum_i e_i v_i + sum_k W_k v_k`` (LAMMPS's
``compute centroid/stress/atom``), summed over every copy c of atom k (its periodic images)
that atom i's energy depends on, each at its own position. Here every such copy is an explicit
atom of a non-periodic cluster (the structure's atoms, then every image within the model's
receptive field of them), so no edge, image shift or halo exchange enters: one gradient of each
E_i with respect to all positions, the structure's own atoms' energies being exact because the
cluster holds everything they depend on.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from ase import Atoms

from equiforce.data import keys
from equiforce.data.graph import atoms_to_configuration, model_inputs
from equiforce.models.contract import PotentialInterface


def image_cluster(atoms: Atoms, reach: float) -> tuple[Atoms, np.ndarray]:
    """``atoms`` (not periodic) followed by every periodic image within ``reach`` Å of one of
    them, and the index in ``atoms`` of each cluster atom (n_cluster,)."""
    cell = atoms.cell.array
    repeats = []
    for axis in range(3):
        if not atoms.pbc[axis]:
            repeats.append([0])
            continue
        normal = np.cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3])
        height = abs(cell[axis] @ normal) / np.linalg.norm(normal)
        count = int(np.ceil(reach / height)) + 1
        repeats.append(range(-count, count + 1))
    positions, owners = [atoms.positions], [np.arange(len(atoms))]
    for shift in itertools.product(*repeats):
        if shift == (0, 0, 0):
            continue
        images = atoms.positions + np.asarray(shift) @ cell
        distance = np.linalg.norm(images[:, None, :] - atoms.positions[None], axis=-1).min(1)
        near = distance <= reach
        positions.append(images[near])
        owners.append(np.flatnonzero(near))
    owner = np.concatenate(owners)
    cluster = Atoms(numbers=atoms.numbers[owner], positions=np.concatenate(positions))
    return cluster, owner


def heat_flux_virials(atoms: Atoms, potential: PotentialInterface) -> np.ndarray:
    """(n_atoms, 3, 3) float64 eV: ``W_k`` of every atom (module docstring), one autograd
    gradient per atom of ``atoms`` on the cluster of its images (``image_cluster``)."""
    reach = potential.energy_model.receptive_field
    cluster, owner = image_cluster(atoms, reach)
    configuration = atoms_to_configuration(cluster, source="image cluster")
    batch = model_inputs(configuration, potential.type_names, potential.r_max)
    positions = batch[keys.POSITIONS].clone().requires_grad_(True)
    energies = potential({**batch, keys.POSITIONS: positions}, compute_forces=False)
    energies = energies[keys.NODE_ENERGY][: len(atoms)]
    x = positions.detach()
    copies = torch.zeros(len(cluster), 3, 3, dtype=torch.float64)
    for i in range(len(atoms)):
        (gradient,) = torch.autograd.grad(energies[i], positions, retain_graph=True)
        copies += (x[i] - x)[:, :, None] * gradient[:, None, :].to(torch.float64)
    virials = torch.zeros(len(atoms), 3, 3, dtype=torch.float64)
    virials.index_add_(0, torch.from_numpy(owner), copies)
    return virials.numpy()
