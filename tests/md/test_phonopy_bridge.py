"""Force constants handed to phonopy (``equiforce.md.phonopy_bridge``, ``equiforce phonons
--phonopy``): phonopy's frequencies from them are ours, on the crystal's cell and on the
primitive cell phonopy finds in a conventional one; phonopy's own finite displacements with the
same potential agree to their step's error; the written ``phonopy_params.yaml`` loads back."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from equiforce.cli import phonons as phonons_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.phonons import force_constants
from equiforce.md.phonopy_bridge import compact_force_constants, to_phonopy

phonopy = pytest.importorskip("phonopy")


def phonopy_frequencies(phonon, qpoints: np.ndarray) -> np.ndarray:
    """Phonopy's frequencies (THz, ascending) at ``qpoints``, fractional coordinates of the
    reciprocal lattice of the *crystal's* cell (phonopy's primitive cell: ``q P``)."""
    phonon.run_qpoints(qpoints @ phonon.primitive_matrix)
    return np.sort(phonon.qpoints.frequencies, axis=1)


def test_phonopy_gives_our_frequencies(model_file, emt_cu_model):
    """Two species of set masses without inversion (zincblende CuAu, a random model, Au given
    a cell away from phonopy's copy of it) on the crystal's cell: phonopy's frequencies at
    general wave vectors are ours (1e-6 THz: phonopy's unit constants differ from ASE's in
    the 7th digit; a supercell atom matched to the wrong copy is off by ~1 THz); a conventional
    fcc cell (4 atoms) whose primitive cell phonopy finds: each of phonopy's 3 branches is one
    of our 12 folded ones."""
    rng = np.random.default_rng(0)
    qpoints = rng.uniform(-0.5, 0.5, (5, 3))
    crystal = bulk("CuAu", "zincblende", a=5.0)  # no inversion
    crystal.positions[1] -= crystal.cell.sum(axis=0)  # phonopy's copy of Au: lattice cell 1
    crystal.set_masses([70.0, 190.0])  # not the elements' masses
    model = force_constants(crystal, EquiforceCalculator(model_file), (3, 3, 3))
    phonon = to_phonopy(model)
    assert phonon.force_constants.shape == (2, 54, 3, 3)
    np.testing.assert_allclose(
        phonopy_frequencies(phonon, qpoints), model.frequencies(qpoints), rtol=1e-6, atol=1e-6
    )

    cubic = bulk("Cu", "fcc", a=3.61, cubic=True)
    model = force_constants(cubic, EquiforceCalculator(emt_cu_model), (2, 2, 2))
    phonon = to_phonopy(model)
    assert len(phonon.primitive) == 1 and phonon.force_constants.shape == (1, 32, 3, 3)
    theirs, ours = phonopy_frequencies(phonon, qpoints), model.frequencies(qpoints)
    assert np.abs(theirs[:, :, None] - ours[:, None, :]).min(axis=2).max() < 1e-5
    with pytest.raises(ValueError, match="does not repeat the crystal"):
        compact_force_constants(model, phonon.supercell.scaled_positions + 0.01, [0])


def test_phonopy_finite_displacements_and_the_saved_file_agree(emt_cu_model, tmp_path):
    """fcc Cu, 3 x 3 x 3, the EMT-fitted model: phonopy's own finite displacements (0.01 Å,
    forces from our calculator) give our frequencies within 0.01 THz (measured ~1e-3; the
    exact Hessian has no step); ``equiforce phonons --phonopy`` writes a
    ``phonopy_params.yaml`` that ``phonopy.load`` reads back to our frequencies."""
    crystal = bulk("Cu", "fcc", a=3.61)
    calculator = EquiforceCalculator(emt_cu_model)
    model = force_constants(crystal, calculator, (3, 3, 3))
    qpoints = np.array([[0.5, 0.0, 0.5], [0.13, 0.29, 0.41], [0.25, 0.25, 0.25]])

    reference = to_phonopy(model)
    reference.generate_displacements(distance=0.01)
    forces = []
    for displaced in reference.supercells_with_displacements:
        atoms = Atoms(
            displaced.symbols,
            cell=displaced.cell,
            scaled_positions=displaced.scaled_positions,
            pbc=True,
            calculator=calculator,
        )
        forces.append(atoms.get_forces())
    reference.forces = np.array(forces)
    reference.produce_force_constants()
    np.testing.assert_allclose(
        phonopy_frequencies(reference, qpoints), model.frequencies(qpoints), atol=1e-2
    )

    parser = argparse.ArgumentParser()
    phonons_cli.add_arguments(parser)
    write(tmp_path / "cu.xyz", crystal)
    out = tmp_path / "out"
    argv = [emt_cu_model, str(tmp_path / "cu.xyz"), "--out", str(out), "--phonopy"]
    assert phonons_cli.run(parser.parse_args([*argv, "--mesh", "4", "4", "4"])) == 0
    loaded = phonopy.load(out / phonons_cli.PHONOPY_NAME)
    np.testing.assert_allclose(
        phonopy_frequencies(loaded, qpoints), model.frequencies(qpoints), rtol=1e-6, atol=1e-6
    )
