"""The vesin neighbour list against ASE's, on the cells that trip neighbour lists up."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equiforce.data.neighbors import neighbor_list
from equiforce.testing.structures import (
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)


def _pairs(i, j, shifts) -> list[tuple]:
    return sorted(
        zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, shifts), strict=True)
    )


def _assert_matches_ase(atoms, r_max: float, cell=None) -> None:
    """Same (i, j, shift) set as ASE; ``cell`` overrides what equiforce gets."""
    i, j, shifts = ase_neighbor_list("ijS", atoms, r_max)
    cell = atoms.cell.array if cell is None else cell
    edge_index, edge_shift = neighbor_list(atoms.positions, cell, atoms.pbc, r_max)
    got = _pairs(edge_index[0], edge_index[1], edge_shift.astype(int))
    assert got == _pairs(i, j, shifts)
    assert len(got) > 0


def _with_cell_row(atoms, axis: int, row) -> object:
    atoms = atoms.copy()
    cell = atoms.cell.array.copy()
    cell[axis] = row
    atoms.set_cell(cell)
    return atoms


@pytest.mark.parametrize("r_max", [3.0, 5.0])
def test_periodic_triclinic_cell_matches_ase(r_max):
    _assert_matches_ase(make_triclinic_cu(), r_max)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, True)])
def test_random_skewed_cells_match_ase(seed, pbc):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.0, 6.0, 3)) + np.triu(rng.uniform(-2.5, 2.5, (3, 3)), 1)
    atoms = Atoms("Cu6", cell=cell, pbc=pbc, scaled_positions=rng.uniform(size=(6, 3)))
    _assert_matches_ase(atoms, 4.5)


def test_small_cell_includes_own_periodic_images():
    atoms = bulk("Cu", "fcc", a=3.61)  # one atom, cutoff larger than the cell
    _assert_matches_ase(atoms, 6.0)
    edge_index, edge_shift = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
    assert (edge_index == 0).all()
    assert np.abs(edge_shift).sum(axis=1).min() > 0  # only images, never the atom itself


def test_small_multi_atom_cell_matches_ase():
    _assert_matches_ase(make_fcc_cu(repeat=1), 7.0)


def test_slab_matches_ase():
    _assert_matches_ase(make_slab(), 4.5)


def test_slab_with_zero_non_periodic_vector():
    slab = make_slab()
    zeroed = slab.copy()
    zeroed.set_cell(np.vstack([slab.cell.array[:2], np.zeros(3)]))
    _assert_matches_ase(slab, 4.5, cell=zeroed.cell.array)


def test_slab_with_short_or_parallel_non_periodic_vector():
    slab = make_slab()
    short = slab.cell.array.copy()
    short[2] = [0.0, 0.0, 0.5]
    _assert_matches_ase(slab, 4.5, cell=short)
    parallel = slab.cell.array.copy()
    parallel[2] = parallel[0]
    _assert_matches_ase(slab, 4.5, cell=parallel)


def test_slab_atoms_far_outside_the_box():
    slab = make_slab()
    slab.positions[:, 2] += 40.0
    _assert_matches_ase(slab, 4.5)


def test_triclinic_wire_periodic_along_one_axis():
    atoms = make_triclinic_cu()
    atoms.pbc = [False, True, False]
    _assert_matches_ase(atoms, 5.0)


def test_molecule_with_dummy_lattice_ignores_it():
    molecule = make_molecule()
    molecule.set_cell([3.0, 3.0, 3.0])  # dummy box smaller than the molecule, pbc F F F
    _assert_matches_ase(molecule, 3.0)


def test_edges_sorted_by_centre_then_neighbour():
    edge_index, _ = neighbor_list(make_molecule().positions, np.zeros((3, 3)), [False] * 3, 3.0)
    keys = edge_index[0] * 1000 + edge_index[1]
    assert (np.diff(keys) >= 0).all()


def test_zero_periodic_vector_raises_instead_of_crashing():
    atoms = _with_cell_row(make_triclinic_cu(), 1, np.zeros(3))
    with pytest.raises(ValueError, match="linearly dependent"):
        neighbor_list(atoms.positions, atoms.cell.array, [True, True, False], 4.0)


def test_parallel_periodic_vectors_raise():
    atoms = make_triclinic_cu()
    cell = atoms.cell.array.copy()
    cell[2] = 2.0 * cell[0]
    with pytest.raises(ValueError, match="linearly dependent"):
        neighbor_list(atoms.positions, cell, [True, True, True], 4.0)
