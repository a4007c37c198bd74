"""Generated benchmark systems: counts, density, no overlapping atoms, seeds, names."""

from __future__ import annotations

import numpy as np
import pytest
from ase.data import atomic_masses

from equiforce.data.neighbors import neighbor_list
from equiforce.workflows.bench.systems import (
    FCC_AL_A,
    MIN_INTERMOLECULAR_A,
    fcc_box,
    load_frames,
    make_system,
    parse_system,
    save_frames,
    water_box,
)

AMU_G = 1.66053906660e-24  # g per atomic mass unit


@pytest.mark.parametrize("wanted", [3, 100, 1000, 3000])
def test_water_box_has_the_rounded_atom_count_and_water_density(wanted):
    atoms = water_box(wanted, seed=1)
    assert len(atoms) == 3 * round(wanted / 3)
    assert sorted(atoms.get_chemical_symbols()) == sorted(["O", "H", "H"] * (len(atoms) // 3))
    grams = atomic_masses[atoms.numbers].sum() * AMU_G
    density = grams / (atoms.get_volume() * 1e-24)
    assert density == pytest.approx(1.0, rel=1e-3)
    assert atoms.pbc.all() and np.allclose(atoms.cell.array, np.eye(3) * atoms.cell[0, 0])


def test_water_box_keeps_molecules_intact_and_apart():
    atoms = water_box(3000, seed=2)
    edges, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, MIN_INTERMOLECULAR_A)
    molecule = edges // 3
    assert np.all(molecule[0] == molecule[1]), "atoms of different molecules overlap"
    d = atoms.positions.reshape(-1, 3, 3)
    oh = np.linalg.norm(d[:, 1:] - d[:, :1], axis=-1)
    np.testing.assert_allclose(oh, 0.9572, atol=1e-9)


def test_water_box_is_reproducible_per_seed():
    np.testing.assert_array_equal(water_box(300, 5).positions, water_box(300, 5).positions)
    assert not np.allclose(water_box(300, 5).positions, water_box(300, 6).positions)


def test_molecule_and_batch_are_rattled_acetylacetone():
    (molecule,) = make_system("molecule")
    assert molecule.get_chemical_formula() == "C5H8O2" and not molecule.pbc.any()
    distances = molecule.get_all_distances()[np.triu_indices(15, 1)]
    assert distances.min() > 0.8
    batch = make_system("batch64", seed=3)
    assert len(batch) == 64 and all(a.get_chemical_formula() == "C5H8O2" for a in batch)
    positions = np.stack([a.positions for a in batch])
    assert np.unique(positions.round(6), axis=0).shape[0] == 64


def test_frames_round_trip_through_npz(tmp_path):
    frames = make_system("batch3") + make_system("box-30")
    save_frames(frames, tmp_path / "frames.npz")
    back = load_frames(tmp_path / "frames.npz")
    assert len(back) == 4
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        np.testing.assert_array_equal(a.pbc, b.pbc)


@pytest.mark.parametrize(
    "name", ["box", "box-2", "batch0", "water", "box-3k", "batch-4", "fcc-3", "fcc-32-random"]
)
def test_bad_system_names_are_rejected_with_the_accepted_forms(name):
    with pytest.raises(ValueError, match="molecule.*batchN.*box-N.*fcc-N"):
        parse_system(name)


def test_system_names_parse():
    assert parse_system("molecule") == ("molecule", 1)
    assert parse_system("batch64") == ("batch", 64)
    assert parse_system("box-100000") == ("box", 100000)
    assert parse_system("fcc-864") == ("fcc", 864)
    assert parse_system("fcc-864-shuffled") == ("fcc-shuffled", 864)


@pytest.mark.parametrize(("wanted", "cells"), [(4, 1), (864, 6), (900, 6), (97556, 29)])
def test_fcc_box_is_the_nearest_cubic_supercell_at_aluminium_density(wanted, cells):
    atoms = fcc_box(wanted, seed=1)
    assert len(atoms) == 4 * cells**3 and set(atoms.get_chemical_symbols()) == {"Al"}
    assert atoms.pbc.all() and np.allclose(atoms.cell.array, np.eye(3) * FCC_AL_A * cells)
    assert len(atoms) / atoms.get_volume() == pytest.approx(4 / FCC_AL_A**3)


def test_fcc_box_is_rattled_about_the_lattice_and_shuffles_only_the_order():
    (atoms,) = make_system("fcc-108", seed=3)
    (shuffled,) = make_system("fcc-108-shuffled", seed=3)
    lattice = np.round(atoms.positions / (FCC_AL_A / 2)) * (FCC_AL_A / 2)
    displacement = atoms.positions - lattice
    assert 0.02 < displacement.std() < 0.08 and np.abs(displacement).max() < 0.5
    assert len(np.unique(lattice.round(6), axis=0)) == 108
    assert not np.allclose(atoms.positions, shuffled.positions)
    order = np.lexsort(atoms.positions.T), np.lexsort(shuffled.positions.T)
    np.testing.assert_array_equal(atoms.positions[order[0]], shuffled.positions[order[1]])


def test_file_systems_are_the_frames_a_structure_file_holds(tmp_path):
    from ase.io import write

    from equiforce.workflows.bench import BenchConfig
    from equiforce.workflows.bench.options import Variant
    from equiforce.workflows.bench.systems import system_atoms

    frames = [make_system("molecule", seed=k)[0] for k in range(3)]
    frames[2] = frames[2][:7]
    path = tmp_path / "mine.xyz"
    write(path, frames, format="extxyz")
    assert parse_system(f"file:{path}") == ("file", 3)
    assert parse_system(f"file:{path}@:2") == ("file", 2)
    assert system_atoms(f"file:{path}") == 15 + 15 + 7
    (last,) = make_system(f"file:{path}@2", seed=9)  # a file's frames are as read
    np.testing.assert_allclose(last.positions, frames[2].positions, atol=1e-8)  # as written
    assert last.get_chemical_formula() == frames[2].get_chemical_formula()
    with pytest.raises(ValueError, match=r"'file:.*nothere.xyz': no file .*nothere.xyz"):
        parse_system(f"file:{tmp_path / 'nothere.xyz'}")
    with pytest.raises(ValueError, match="selects no frame"):
        parse_system(f"file:{path}@5:")
    exported = (Variant("exported", export_backend="reference"),)
    with pytest.raises(ValueError, match="one structure per call"):
        BenchConfig(preset="allegro-tiny", systems=(f"file:{path}@:2",), variants=exported)
    BenchConfig(preset="allegro-tiny", systems=(f"file:{path}@0",), variants=exported)
