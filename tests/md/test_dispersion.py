"""D3 added to a model (``equiforce.md.dispersion``, ``--dispersion``): energy, forces and
stress are the model's plus simple-dftd3's, forces the energy's derivative, the Hessian the
forces', the NEB batch the single calls'; the commands take it, the batched ones refuse it."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase.cluster import Icosahedron
from ase.io import write

from equiforce.cli import md as md_cli
from equiforce.cli import relax as relax_cli
from equiforce.cli import vibrations as vibrations_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.dispersion import DispersionCorrected, d3_calculator
from equiforce.testing.structures import make_molecule, make_triclinic_cu

pytest.importorskip("dftd3")


def test_results_are_the_models_plus_d3s(model_file):
    """A triclinic cell and a molecule: energy, forces and stress equal the model's plus
    D3(BJ, PBE)'s (1e-12); forces are -dE/dx (central differences, 1e-6); the Hessian's rows
    are the combined forces' derivatives (1e-5: D3's part by differences itself) and
    ``rows_of`` picks them; the batch of both equals each alone (1e-10)."""
    model = EquiforceCalculator(model_file)
    corrected = DispersionCorrected(EquiforceCalculator(model_file), xc="PBE", damping="d3bj")
    d3 = d3_calculator("PBE", "d3bj")
    cell, molecule = make_triclinic_cu(seed=4), make_molecule("CH3CH2OH", seed=5)
    for atoms in (cell, molecule):
        names = ("energy", "forces", "stress") if atoms.pbc.all() else ("energy", "forces")
        for name in names:
            mine = corrected.get_property(name, atoms.copy())
            parts = model.get_property(name, atoms.copy()) + d3.get_property(name, atoms.copy())
            np.testing.assert_allclose(mine, parts, atol=1e-12)
        assert abs(d3.get_potential_energy(atoms.copy())) > 1e-3  # D3 is there

    step = 1e-4
    hessian = corrected.get_hessian(molecule)
    for atom, axis in ((0, 0), (4, 2)):
        energies, forces = [], []
        for sign in (1.0, -1.0):
            moved = molecule.copy()
            moved.positions[atom, axis] += sign * step
            energies.append(corrected.get_potential_energy(moved))
            forces.append(corrected.get_forces(moved).ravel())
        derivative = -(energies[0] - energies[1]) / (2 * step)
        assert corrected.get_forces(molecule.copy())[atom, axis] == pytest.approx(
            derivative, abs=1e-6
        )
        row = -(forces[0] - forces[1]) / (2 * step)
        np.testing.assert_allclose(hessian[3 * atom + axis], row, atol=1e-5)
    np.testing.assert_allclose(
        corrected.get_hessian(molecule, rows_of=[4]), hessian[12:15], atol=1e-12
    )
    energies, forces = corrected.energies_and_forces([cell, molecule])
    for atoms, energy, force in zip((cell, molecule), energies, forces, strict=True):
        assert energy == pytest.approx(corrected.get_potential_energy(atoms.copy()), abs=1e-10)
        np.testing.assert_allclose(force, corrected.get_forces(atoms.copy()), atol=1e-10)


def test_commands_take_it_and_the_batched_ones_refuse_it(model_file, emt_cu_model, tmp_path):
    """``equiforce vibrations --relax --dispersion d3bj`` of a Cu13 cluster (the EMT-fitted
    model): D3 binds it more, so its energy falls and its modes stiffen; ``relax --batched``
    and ``md --batched`` refuse it by name; an unknown damping is refused."""
    write(tmp_path / "cluster.xyz", Icosahedron("Cu", 2))
    parser = argparse.ArgumentParser()
    vibrations_cli.add_arguments(parser)
    summaries = []
    for extra in ([], ["--dispersion", "d3bj"]):
        out = tmp_path / f"v{len(extra)}"
        argv = [emt_cu_model, str(tmp_path / "cluster.xyz"), "--relax", "--out", str(out)]
        assert vibrations_cli.run(parser.parse_args([*argv, *extra])) == 0
        summaries.append(json.loads((out / vibrations_cli.SUMMARY_NAME).read_text()))
    plain, corrected = summaries
    assert corrected["potential_energy_eV"] < plain["potential_energy_eV"] - 0.5
    assert corrected["frequencies_cm-1"][-1] > plain["frequencies_cm-1"][-1]
    write(tmp_path / "molecule.xyz", make_molecule("CH3CH2OH", seed=5))
    relax = argparse.ArgumentParser()
    relax_cli.add_arguments(relax)
    argv = [model_file, str(tmp_path / "molecule.xyz"), str(tmp_path / "out.xyz")]
    with pytest.raises(ValueError, match="--dispersion adds D3 to the ASE calculator"):
        relax_cli.run(relax.parse_args([*argv, "--batched", "--dispersion", "d3bj"]))
    md = argparse.ArgumentParser()
    md_cli.add_arguments(md)
    argv = [model_file, str(tmp_path / "molecule.xyz"), "--out", str(tmp_path / "md")]
    with pytest.raises(ValueError, match="--dispersion adds D3 to the ASE calculator"):
        md_cli.run(md.parse_args([*argv, "--batched", "--dispersion", "d3bj"]))
    with pytest.raises(ValueError, match="damping must be one of"):
        d3_calculator("PBE", "d4")
