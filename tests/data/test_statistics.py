"""Dataset statistics: E0s, neighbour counts, force RMS, interaction energy, isolated atoms."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from equiforce.data import (
    Configuration,
    DataError,
    GraphDataset,
    KeySpec,
    compute_statistics,
    neighbor_list,
    read_isolated_atom_energies,
)
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.testing.tolerances import TOL

R_MAX = 3.0
E0 = {"H": -13.6, "C": -1026.9, "O": -2037.8}


def _synthetic(name: str, seed: int) -> Configuration:
    """A molecule with energy = sum of E0s + 0.1 eV per atom and seeded random forces."""
    atoms = make_molecule(name, seed=seed)
    rng = np.random.default_rng(seed)
    energy = sum(E0[s] for s in atoms.get_chemical_symbols()) + 0.1 * len(atoms)
    return Configuration(
        atomic_numbers=atoms.numbers.astype(np.int64),
        positions=atoms.positions,
        energy=energy,
        forces=rng.normal(size=(len(atoms), 3)),
        source=f"{name} {seed}",
    )


@pytest.fixture
def mixed_molecules() -> list[Configuration]:
    """Molecules of different stoichiometries, so least squares pins every E0."""
    return [_synthetic(name, s) for s, name in enumerate(["CH4", "H2O", "CO2", "CH3OH", "C2H6"])]


def test_species_are_sorted_by_atomic_number(mixed_molecules):
    assert compute_statistics(mixed_molecules, R_MAX).type_names == ("H", "C", "O")


def test_least_squares_recovers_e0s_up_to_the_per_atom_offset(mixed_molecules):
    stats = compute_statistics(mixed_molecules, R_MAX)
    # energy = sum(E0 + 0.1) exactly, so the fitted E0s are E0 + 0.1 and the residual is 0.
    expected = [E0[s] + 0.1 for s in stats.type_names]
    np.testing.assert_allclose(stats.atomic_energies, expected, atol=TOL.fp32.atol)
    assert stats.mean_interaction_energy == pytest.approx(0.0, abs=TOL.fp32.atol)


def test_isolated_atom_energies_give_the_mean_interaction_energy(mixed_molecules):
    stats = compute_statistics(mixed_molecules, R_MAX, isolated_atoms={**E0, "N": -1.0})
    assert stats.atomic_energy_dict == E0
    assert stats.mean_interaction_energy == pytest.approx(0.1, abs=TOL.fp64.atol)


def test_missing_isolated_atom_species_raises(mixed_molecules):
    with pytest.raises(ValueError, match=r"lack \['O'\]"):
        compute_statistics(mixed_molecules, R_MAX, isolated_atoms={"H": -1.0, "C": -2.0})


def test_force_rms_and_average_neighbours(mixed_molecules):
    stats = compute_statistics(mixed_molecules, R_MAX)
    forces = np.concatenate([c.forces for c in mixed_molecules])
    assert stats.force_rms == pytest.approx(np.sqrt(np.mean(forces**2)), rel=TOL.fp64.rtol)
    n_edges = sum(
        neighbor_list(c.positions, c.cell, c.pbc, R_MAX)[0].shape[1] for c in mixed_molecules
    )
    n_atoms = sum(c.n_atoms for c in mixed_molecules)
    assert stats.avg_num_neighbors == pytest.approx(n_edges / n_atoms, rel=TOL.fp64.rtol)
    assert stats.n_configs == len(mixed_molecules)


def test_graph_dataset_gives_the_same_statistics(mixed_molecules):
    dataset = GraphDataset.from_configurations(mixed_molecules, ("H", "C", "O"), R_MAX)
    assert compute_statistics(dataset, R_MAX) == compute_statistics(mixed_molecules, R_MAX)


def test_graph_dataset_with_another_cutoff_raises(mixed_molecules):
    dataset = GraphDataset.from_configurations(mixed_molecules, ("H", "C", "O"), R_MAX)
    with pytest.raises(ValueError, match="r_max"):
        compute_statistics(dataset, R_MAX + 1.0)


def test_species_outside_type_names_raise(mixed_molecules):
    with pytest.raises(ValueError, match=r"\['O'\] occur in the data"):
        compute_statistics(mixed_molecules, R_MAX, type_names=("H", "C"))


def test_e0_of_a_type_absent_from_the_data_cannot_be_fitted(mixed_molecules):
    with pytest.raises(ValueError, match=r"cannot fit E0s of \['N'\]"):
        compute_statistics(mixed_molecules, R_MAX, type_names=("H", "C", "N", "O"))


def test_fixed_stoichiometry_still_centres_the_energies():
    configs = [_synthetic("H2O", s) for s in range(4)]
    stats = compute_statistics(configs, R_MAX)
    assert stats.mean_interaction_energy == pytest.approx(0.0, abs=TOL.fp32.atol)


def test_no_forces_fall_back_to_unit_scale_with_a_warning():
    config = Configuration(
        atomic_numbers=np.array([29, 29]),
        positions=np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]]),
        energy=-1.0,
    )
    with pytest.warns(UserWarning, match="force_rms set to 1.0"):
        assert compute_statistics([config], R_MAX).force_rms == 1.0


def test_empty_data_raise():
    with pytest.raises(ValueError, match="at least one"):
        compute_statistics([], R_MAX)


def test_read_isolated_atom_energies(write_frames):
    frames = []
    for symbol, energy in [("H", -13.6), ("O", -2037.8)]:
        atoms = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
        atoms.info["REF_energy"] = energy
        frames.append(atoms)
    energies = read_isolated_atom_energies(write_frames(frames), KeySpec(energy_key="REF_energy"))
    assert energies == {"H": -13.6, "O": -2037.8}


def test_isolated_atom_file_with_a_multi_atom_frame_raises(write_frames):
    atoms = make_fcc_cu(repeat=1)
    atoms.info["energy"] = -1.0
    with pytest.raises(DataError, match="frame 0: isolated-atom frames must have 1 atom"):
        read_isolated_atom_energies(write_frames([atoms]))


def test_isolated_atom_file_with_a_repeated_element_raises(write_frames):
    frames = [Atoms("H", positions=[[0.0, 0.0, 0.0]], info={"energy": e}) for e in (-1.0, -2.0)]
    with pytest.raises(DataError, match="frame 1: second isolated-atom energy for H"):
        read_isolated_atom_energies(write_frames(frames))
