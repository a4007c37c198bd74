"""Phonons (``equiforce.md.phonons``, ``equiforce phonons``): the force constants of a
supercell's exact Hessian give the supercell's own vibrations at the commensurate wave
vectors, agree there with ASE's finite-displacement ``Phonons``, respect the acoustic sum rule
and the crystal's point group between them; the command writes the dispersion, the density of
states and the stability verdict."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.io import read, write
from ase.spacegroup import crystal as spacegroup_crystal

from equiforce.cli import phonons as phonons_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.phonons import (
    THZ_PER_ROOT_EIGENVALUE,
    density_of_states,
    force_constants,
    thermal_properties,
)


def supercell_frequencies(calculator, crystal, repeats) -> np.ndarray:
    """The frequencies (THz, ascending) of the supercell's own normal modes: the whole
    mass-weighted Hessian, diagonalised."""
    large = crystal.repeat(repeats)
    masses = np.repeat(large.get_masses(), 3)
    hessian = calculator.get_hessian(large) / np.sqrt(np.outer(masses, masses))
    eigenvalues = np.linalg.eigvalsh(hessian)
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * THZ_PER_ROOT_EIGENVALUE


def commensurate(repeats) -> np.ndarray:
    """The wave vectors (fractional) whose phases repeat with the supercell."""
    axes = [np.arange(n) / n for n in repeats]
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T


@pytest.mark.parametrize(
    "crystal, repeats, model_name",
    [
        (bulk("Cu", "fcc", a=3.61), (3, 3, 3), "emt_cu_model"),
        (bulk("Cu", "hcp", a=2.56, c=4.18), (3, 3, 2), "emt_cu_model"),  # blocks between atoms
        (bulk("CuAu", "cesiumchloride", a=3.1), (3, 3, 3), "model_file"),  # unequal masses
    ],
    ids=["fcc", "hcp", "CsCl-CuAu"],
)
def test_commensurate_frequencies_are_the_supercells_own(request, crystal, repeats, model_name):
    """At the supercell's commensurate wave vectors the dispersion's frequencies are exactly
    the supercell's normal modes (the whole Hessian diagonalised: 1e-6 THz; the acoustic
    modes' square roots of round-off set the scale), for one atom, two alike and two of
    different masses (a random model: unstable modes as negative numbers alike); the acoustic
    sum rule holds to round-off and Gamma's acoustic frequencies vanish."""
    calculator = EquiforceCalculator(request.getfixturevalue(model_name))
    model = force_constants(crystal, calculator, repeats)
    assert model.sum_rule_residual < 1e-10 and model.max_force < 1e-10
    mine = np.sort(model.frequencies(commensurate(repeats)).ravel())
    np.testing.assert_allclose(mine, supercell_frequencies(calculator, crystal, repeats), atol=1e-6)
    gamma = model.frequencies(np.zeros((1, 3)))[0]
    assert np.sort(np.abs(gamma))[:3].max() < 1e-5
    large = crystal.repeat(repeats)
    rows = calculator.get_hessian(large, rows_of=[1, 0])  # Hessian-vector products
    np.testing.assert_allclose(rows[:3], calculator.get_hessian(large)[3:6], atol=1e-12)


@pytest.mark.parametrize(
    "crystal, repeats",
    [
        (bulk("Cu", "hcp", a=2.56, c=4.18), (3, 3, 2)),  # a 6-fold screw: 2 atoms, 1 orbit
        (bulk("Cu", "fcc", a=3.61, cubic=True), (2, 2, 2)),  # pure translations: 4 atoms
        (
            spacegroup_crystal(
                ["Cu"], [(0.30, 0.05, 0.33)], spacegroup=143, cellpar=[5.0, 5.0, 4.0, 90, 90, 120]
            ),
            (2, 2, 2),
        ),  # general positions of a 3-fold axis: 3 atoms
    ],
    ids=["hcp", "fcc-conventional", "P3-general"],
)
def test_equivalent_atoms_share_rotated_rows(model_file, crystal, repeats):
    """With the crystal's symmetry (the default), one representative of each orbit has its
    Hessian rows computed and the others' are its rows rotated (``symmetric_rows``): the
    force constants equal every atom's own rows to 1e-12 (a random model: nothing but the
    symmetry makes them agree), in a third of the backward passes or fewer here."""
    from equiforce.md.phonons import _orbits

    calculator = EquiforceCalculator(model_file)
    own = force_constants(crystal, calculator, repeats, symmetry_tolerance=None)
    shared = force_constants(crystal, calculator, repeats)
    assert len({orbit[0] for orbit in _orbits(crystal, 1e-5).values()}) == 1
    np.testing.assert_allclose(shared.constants, own.constants, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(shared.lattice, own.lattice)


def test_dispersion_agrees_with_finite_displacements_and_the_point_group(emt_cu_model, tmp_path):
    """fcc Cu, 3 x 3 x 3: at the commensurate wave vectors ASE's ``Phonons`` (finite
    displacements of 0.01 Å, its acoustic sum rule) gives the same frequencies within
    0.005 THz (measured 4e-4); between them, the wave vectors a cubic rotation and an
    inversion map onto each other have the same frequencies (1e-9 THz: the images at equal
    distance share their force constants; the first image alone breaks this by 0.08 THz);
    the density of states integrates to 3 modes per atom."""
    from ase.phonons import Phonons

    crystal = bulk("Cu", "fcc", a=3.61)
    calculator = EquiforceCalculator(emt_cu_model)
    model = force_constants(crystal, calculator, (3, 3, 3))
    reference = Phonons(
        crystal, calculator, supercell=(3, 3, 3), delta=0.01, name=os.fspath(tmp_path / "ph")
    )
    reference.run()
    reference.read(acoustic=True)
    qpoints = commensurate((3, 3, 3))
    theirs = np.sort(reference.band_structure(qpoints), axis=1)  # eV
    theirs = theirs / (units._hplanck / units._e * 1e12)  # THz
    np.testing.assert_allclose(model.frequencies(qpoints), theirs, atol=5e-3)

    general = np.array([0.13, 0.29, 0.41]) @ crystal.cell.reciprocal()  # Cartesian, 1/Å
    turn = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # a 3-fold axis of the cube
    images = np.array([general, general @ turn.T, -general, general @ turn.T @ turn.T])
    fractional = images @ crystal.cell.array.T
    frequencies = model.frequencies(fractional)
    np.testing.assert_allclose(frequencies, frequencies[:1].repeat(4, axis=0), atol=1e-9)
    grid, density = density_of_states(model, (8, 8, 8), width=0.1)
    assert abs(np.trapezoid(density, grid) - 3.0) < 1e-3


def test_thermal_properties_are_the_harmonic_crystals(emt_cu_model):
    """The harmonic free energy, entropy and heat capacity (fcc Cu, 4 x 4 x 4, a 12^3 mesh)
    equal ASE's ``CrystalThermo`` on the mesh's density of states (2000 bins: 1e-6 eV,
    1e-4 k_B); dF/dT = -S and dE/dT = C_V (central differences, 1e-7 relative); at 0 K
    the free energy is the zero-point energy, at 5000 K C_V is Dulong and Petit's 3 k_B."""
    from ase.dft.kpoints import monkhorst_pack
    from ase.thermochemistry import CrystalThermo

    model = force_constants(bulk("Cu", "fcc", a=3.61), EquiforceCalculator(emt_cu_model), (4, 4, 4))
    mesh = (12, 12, 12)
    thermal = thermal_properties(model, mesh, np.array([0.0, 300.0, 5000.0]))
    quanta = model.frequencies(monkhorst_pack(mesh)).ravel() * 1e12 * units._hplanck / units._e
    counts, edges = np.histogram(quanta, bins=2000, range=(0, quanta.max() * 1.001))
    reference = CrystalThermo(
        phonon_DOS=counts / np.prod(mesh) / (edges[1] - edges[0]),
        phonon_energies=(edges[1:] + edges[:-1]) / 2,
        potentialenergy=0.0,
        formula_units=1,
    )
    free = reference.get_helmholtz_energy(300.0, verbose=False)
    assert abs(thermal.free_energy[1] - free) < 1e-6
    entropy = reference.get_entropy(300.0, verbose=False)
    assert abs(thermal.entropy[1] - entropy) / units.kB < 1e-4
    assert (
        thermal.free_energy[0]
        == thermal.zero_point_energy
        == pytest.approx(quanta.sum() / 2 / 12**3)
    )
    assert abs(thermal.heat_capacity[2] / units.kB - 3.0) < 2e-3 and thermal.skipped_modes == 0
    step = 1e-3
    around = thermal_properties(model, mesh, np.array([300.0 - step, 300.0, 300.0 + step]))
    slope = (around.free_energy[2] - around.free_energy[0]) / (2 * step)
    assert slope == pytest.approx(-around.entropy[1], rel=1e-7)
    slope = (around.energy[2] - around.energy[0]) / (2 * step)
    assert slope == pytest.approx(around.heat_capacity[1], rel=1e-7)


def test_cli_writes_the_dispersion_and_names_bad_input(emt_cu_model, tmp_path, capsys):
    """``equiforce phonons``: JSON (path, frequencies, density of states, stability, checks)
    and figure, the thermal table; ``--relax`` relaxes a compressed crystal first; a crystal
    under tension along one axis with an atom off its site is reported unstable with the
    force warning; a molecule and bad options are refused."""
    parser = argparse.ArgumentParser()
    phonons_cli.add_arguments(parser)
    write(tmp_path / "cu.xyz", bulk("Cu", "fcc", a=3.61))
    out = tmp_path / "out"
    argv = [emt_cu_model, str(tmp_path / "cu.xyz"), "--out", str(out), "--mesh", "6", "6", "6"]
    assert phonons_cli.run(parser.parse_args([*argv, "--points", "40"])) == 0
    summary = json.loads((out / phonons_cli.SUMMARY_NAME).read_text())
    assert summary["path"].startswith("GXW") and summary["stable"] is True
    assert np.asarray(summary["frequencies_THz"]).shape == (40, 3)
    assert 5.0 < summary["max_frequency_THz"] < 10.0
    assert (out / phonons_cli.FIGURE_NAME).stat().st_size > 0
    assert summary["thermal"]["temperature_K"] == [0.0, 100.0, 300.0, 500.0, 1000.0]
    assert summary["thermal"]["free_energy_eV"][0] == summary["thermal"]["zero_point_energy_eV"]
    printed = capsys.readouterr().out
    assert "dynamically stable" in printed and "C_V (k_B)" in printed
    write(tmp_path / "compressed.xyz", bulk("Cu", "fcc", a=3.5))
    relax = [emt_cu_model, str(tmp_path / "compressed.xyz"), "--out", str(tmp_path / "r")]
    assert phonons_cli.run(parser.parse_args([*relax, "--relax", "--mesh", "4", "4", "4"])) == 0
    relaxed = read(tmp_path / "r" / phonons_cli.RELAXED_NAME)
    assert relaxed.cell.cellpar()[0] > 3.5 / 2**0.5 + 0.05  # expanded (a ~3.6 Å)
    assert "relaxed in" in capsys.readouterr().out

    strained = bulk("Cu", "fcc", a=3.61, cubic=True)
    strained.set_cell(strained.cell.array * [1.25, 1.0, 1.0], scale_atoms=True)
    strained.positions[0] += [0.05, 0.0, 0.0]
    write(tmp_path / "strained.xyz", strained)
    argv[1] = str(tmp_path / "strained.xyz")
    assert phonons_cli.run(parser.parse_args([*argv, "--supercell", "2", "2", "2"])) == 0
    printed = capsys.readouterr().out
    assert "UNSTABLE" in printed and "not at a minimum" in printed
    assert json.loads((out / phonons_cli.SUMMARY_NAME).read_text())["imaginary_modes"] > 0

    cluster = bulk("Cu", "fcc", a=3.61) * (2, 1, 1)
    cluster.pbc = False
    write(tmp_path / "molecule.xyz", cluster)
    argv[1] = str(tmp_path / "molecule.xyz")
    with pytest.raises(ValueError, match="phonons need a crystal periodic in 3D"):
        phonons_cli.run(parser.parse_args(argv))
    with pytest.raises(ValueError, match="supercell must be three repetitions >= 1"):
        force_constants(bulk("Cu"), EquiforceCalculator(emt_cu_model), (0, 1, 1))
    with pytest.raises(ValueError, match="need at least 2 points"):
        phonons_cli.run(parser.parse_args([*argv, "--width", "0"]))
    with pytest.raises(ValueError, match="temperatures must be >= 0 K"):
        phonons_cli.run(parser.parse_args([*argv, "--temperatures", "-5"]))
