"""Equation of state (``equiforce.md.eos``, ``equiforce eos``): a St Venant-Kirchhoff cell's
V0 and B0 = lame + 2 shear / 3; EMT Cu's fit equals ASE's on scaled cells, and its stress's
pressures equal -dE/dV; the bulk modulus of the EMT-fitted model agrees with its elastic
constants'; the command writes the fit and names bad input."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.io import write

from equiforce.cli import eos as eos_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.elastic import elastic_constants
from equiforce.md.eos import equation_of_state
from equiforce.md.relax import relaxed_crystal
from equiforce.testing.calculators import ElasticCell


def test_analytic_cell_and_emt_against_ases_fit():
    """A free atom in a St Venant-Kirchhoff cubic cell (lame 0.3, shear 0.2 eV/Å^3): V0 the
    reference volume (1e-5) and B0 = lame + 2 shear / 3 (0.5 %: a strain energy that is not
    Birch-Murnaghan's); EMT Cu: V0, B0 and B0' equal ASE's Birch-Murnaghan fit of the scaled
    cells (nothing relaxes in fcc) to 1e-6, and the stress's pressures equal the fit's
    -dE/dV within 0.05 GPa (measured 0.01)."""
    reference = np.eye(3) * 3.0
    cell = Atoms("Cu", positions=[[1.5, 1.5, 1.5]], cell=reference, pbc=True)
    result = equation_of_state(cell, ElasticCell(reference, 0.3, 0.2), volume_range=0.04)
    assert result.volume == pytest.approx(27.0, rel=1e-5)
    assert result.bulk_modulus == pytest.approx((0.3 + 2 * 0.2 / 3) / units.GPa, rel=5e-3)

    copper = relaxed_crystal(bulk("Cu", "fcc", a=3.6), EMT()).atoms
    result = equation_of_state(copper, EMT())
    volumes, energies = [], []
    for ratio in np.linspace(0.94, 1.06, 11):
        scaled = copper.copy()
        scaled.set_cell(copper.cell.array * ratio ** (1 / 3), scale_atoms=True)
        scaled.calc = EMT()
        volumes.append(scaled.get_volume())
        energies.append(scaled.get_potential_energy())
    theirs = EquationOfState(volumes, energies, eos="birchmurnaghan")
    theirs.fit(warn=False)
    e0, b0, b0_prime, v0 = theirs.eos_parameters
    assert result.volume == pytest.approx(v0, rel=1e-6)
    assert result.bulk_modulus == pytest.approx(b0 / units.GPa, rel=1e-6)
    assert result.pressure_derivative == pytest.approx(b0_prime, rel=1e-6)
    assert np.abs(result.pressures - result.fitted_pressures).max() < 0.05
    assert result.rms_residual < 1e-4


def test_bulk_modulus_agrees_with_the_elastic_constants_and_the_cli(emt_cu_model, tmp_path):
    """The EMT-fitted model: the equation of state's B0 equals (C11 + 2 C12) / 3 of its
    elastic constants within 2 % (two routes to one modulus: strained cells' stresses, and
    the curvature of E(V)); ``equiforce eos --relax`` writes the fit; bad options and a
    molecule are refused."""
    calculator = EquiforceCalculator(emt_cu_model)
    crystal = relaxed_crystal(bulk("Cu", "fcc", a=3.6), calculator).atoms
    constants = elastic_constants(crystal, calculator).constants  # GPa
    elastic = (constants[0, 0] + 2 * constants[0, 1]) / 3

    parser = argparse.ArgumentParser()
    eos_cli.add_arguments(parser)
    write(tmp_path / "cu.xyz", bulk("Cu", "fcc", a=3.5))
    out = tmp_path / "out"
    argv = [emt_cu_model, str(tmp_path / "cu.xyz"), "--out", str(out)]
    assert eos_cli.run(parser.parse_args([*argv, "--relax", "--volumes", "7"])) == 0
    summary = json.loads((out / eos_cli.SUMMARY_NAME).read_text())
    assert summary["bulk_modulus_GPa"] == pytest.approx(elastic, rel=0.02)
    assert summary["volume_A3"] == pytest.approx(crystal.get_volume(), rel=2e-3)
    assert summary["max_pressure_difference_GPa"] < 0.5 and len(summary["energies_eV"]) == 7
    assert (out / eos_cli.FIGURE_NAME).stat().st_size > 0
    with pytest.raises(ValueError, match="give at least 5 volumes"):
        eos_cli.run(parser.parse_args([*argv, "--volumes", "3"]))
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    with pytest.raises(ValueError, match="needs 3D pbc"):
        equation_of_state(molecule, calculator)
