"""Saddle points by P-RFO on the exact Hessian (``equiforce.md.saddle``, ``equiforce saddle``):
from a rough guess it converges quadratically to the climbing NEB's saddle with one negative
curvature; its steps go up the followed mode and down the others, never along a rigid-body
motion; the command writes the saddle with its mode and checks it by its vibrations."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase.cluster import Icosahedron
from ase.io import read, write

from equiforce.cli import saddle as saddle_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.neb import interpolated_band, run_neb
from equiforce.md.relax import relax_structure
from equiforce.md.saddle import _bofill, _prfo_step, find_saddle
from equiforce.md.vibrations import rigid_body_basis
from equiforce.testing.structures import vacancy_hop


@pytest.fixture(scope="module")
def calculator(emt_cu_model):
    return EquiforceCalculator(emt_cu_model)


@pytest.fixture(scope="module")
def band(calculator):
    """The vacancy hop's 3-image band, straight between its relaxed end points."""
    ends = [relax_structure(end, calculator, fmax=0.005).atoms for end in vacancy_hop("Cu", 3.6)]
    return interpolated_band(*ends, 3)


def test_converges_to_the_climbing_nebs_saddle(calculator, band):
    """From the band's midpoint rattled by 0.05 Å, and from its quarter point, P-RFO reaches
    forces below 1e-4 eV/Å with one negative curvature within 12 steps (measured 5 and 8:
    quadratic), both at the same saddle (1e-8 eV), the climbing NEB's (its image at 0.01
    eV/Å: within 1e-3 eV and 0.02 Å). With the exact Hessian only at the start (and to
    confirm the saddle), Bofill's updates reach it in at most 20 steps (measured 15)."""
    climbing = run_neb(band, calculator, fmax=0.01, steps=400)
    guess = band[2].copy()
    guess.rattle(0.05, seed=3)
    result = find_saddle(guess, calculator, fmax=1e-4)
    assert result.converged and result.n_steps <= 12 and result.fmax < 1e-4
    assert result.negative_modes == 1 and result.curvatures[0] < -1.0
    energy = result.atoms.get_potential_energy()
    assert energy == pytest.approx(climbing.energies.max(), abs=1e-3)
    image = climbing.images[climbing.saddle]
    assert np.abs(result.atoms.positions - image.positions).max() < 0.02
    updated = find_saddle(guess, calculator, fmax=1e-4, hessian_every=0)
    assert updated.converged and updated.hessians == 2 and updated.n_steps <= 20
    assert updated.atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    assert result.hessians == result.n_steps + 1
    other = find_saddle(band[1], calculator, fmax=1e-4)
    assert other.converged and other.n_steps <= 12
    assert other.atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    assert np.linalg.norm(result.mode) == pytest.approx(1.0)


def test_steps_climb_one_mode_descend_the_others_and_leave_rigid_motions(calculator):
    """The P-RFO step in the eigenbasis: up the followed mode, down the others, Newton's
    step ``-g / b`` near a stationary point; Bofill's update meets the secant condition
    ``B s = dg`` and stays symmetric; a Cu13 cluster's first step (from its minimum,
    slightly off) has no translation or rotation in it (1e-10 of its length) and keeps
    within ``max_step``."""
    curvatures, gradient = np.array([-1.0, 2.0, 0.5]), np.array([0.3, -0.4, 0.2])
    step = _prfo_step(curvatures, gradient, 0)
    assert step[0] * gradient[0] > 0 and (step[1:] * gradient[1:] < 0).all()
    small = gradient * 1e-6
    np.testing.assert_allclose(_prfo_step(curvatures, small, 0), -small / curvatures, rtol=1e-5)
    rng = np.random.default_rng(0)
    hessian = rng.normal(size=(6, 6))
    hessian = hessian + hessian.T
    step, change = rng.normal(size=6), rng.normal(size=6)
    updated = _bofill(hessian, step, change)  # the secant condition, symmetric
    np.testing.assert_allclose(updated @ step, change, atol=1e-12)
    np.testing.assert_allclose(updated, updated.T, atol=1e-12)

    cluster = Icosahedron("Cu", 2)
    cluster.rattle(0.02, seed=1)
    cluster = relax_structure(cluster, calculator, fmax=0.01).atoms
    moved = find_saddle(cluster, calculator, steps=1, max_step=0.05)
    displacement = (moved.atoms.positions - cluster.positions).ravel()
    rigid = rigid_body_basis(cluster, mass_weighted=False)
    assert rigid.shape[1] == 6
    assert np.abs(rigid.T @ displacement).max() < 1e-10 * np.linalg.norm(displacement)
    assert np.linalg.norm(displacement.reshape(-1, 3), axis=1).max() == pytest.approx(0.05)


def test_cli_writes_the_saddle_and_its_mode(emt_cu_model, band, tmp_path, capsys):
    """``equiforce saddle band.xyz@2``: the saddle with its mode, the JSON with one imaginary
    frequency; no steps allowed: not converged, exit 1; a missing file named."""
    write(tmp_path / "band.xyz", band)
    parser = argparse.ArgumentParser()
    saddle_cli.add_arguments(parser)
    argv = [emt_cu_model, f"{tmp_path / 'band.xyz'}@2", "--out", str(tmp_path / "s")]
    assert saddle_cli.run(parser.parse_args([*argv, "--fmax", "1e-4"])) == 0
    summary = json.loads((tmp_path / "s" / saddle_cli.SUMMARY_NAME).read_text())
    assert summary["converged"] and summary["imaginary_modes"] == 1
    assert summary["lowest_frequencies_cm-1"][0] < -50 < 0 < summary["lowest_frequencies_cm-1"][1]
    saddle = read(tmp_path / "s" / saddle_cli.STRUCTURE_NAME)
    assert saddle.get_potential_energy() == pytest.approx(summary["energy_eV"], abs=1e-9)
    assert saddle.arrays["mode"].shape == (31, 3)
    assert "1 imaginary mode(s)" in capsys.readouterr().out
    assert saddle_cli.run(parser.parse_args([*argv, "--steps", "0"])) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        saddle_cli.run(parser.parse_args([emt_cu_model, str(tmp_path / "none.xyz")]))
