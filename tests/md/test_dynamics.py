"""MD driver: energy drift, bond-length deviation, trajectories, runs with a tiny MACE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read

from equiforce.md import (
    EquiforceCalculator,
    bond_length_deviation,
    energy_drift,
    format_md_summary,
    plot_md,
    run_md,
)
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.testing.tolerances import TOL


def assert_close(actual, expected, tol, what: str) -> None:
    """``np.testing.assert_allclose`` with a named tolerance."""
    np.testing.assert_allclose(actual, expected, atol=tol.atol, rtol=tol.rtol, err_msg=what)


def hand_fitted_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope written out: cov(x, y) / var(x)."""
    dx = x - x.mean()
    return float(np.sum(dx * (y - y.mean())) / np.sum(dx * dx))


def test_energy_drift_recovers_the_slope_of_a_linear_ramp():
    time_fs = np.linspace(0.0, 2000.0, 41)
    n_atoms = 8
    total = n_atoms * (-3.0 + 0.004 * time_fs / 1000.0)  # 4 meV/atom/ps
    assert_close(energy_drift(time_fs, total, n_atoms), 4.0, TOL.fp64, "drift")


def test_energy_drift_needs_two_samples():
    with pytest.raises(ValueError, match="two samples"):
        energy_drift(np.array([0.0]), np.array([1.0]), 1)


@pytest.fixture(scope="module")
def nve_emt():
    """200 NVE steps of 32 Cu atoms with EMT at 300 K, 1 fs."""
    atoms = make_fcc_cu(repeat=2, seed=0, au_fraction=0.0)
    return run_md(
        atoms,
        EMT(),
        ensemble="nve",
        temperature_K=300.0,
        timestep_fs=1.0,
        n_steps=200,
        log_interval=5,
        seed=1,
    )


def test_nve_with_emt_conserves_energy(nve_emt):
    assert nve_emt.ensemble == "nve"
    assert len(nve_emt.time_fs) == 200 // 5 + 1
    assert abs(nve_emt.energy_drift) < 1.0  # meV/atom/ps
    fluctuation = np.ptp(nve_emt.total_energy) / nve_emt.n_atoms
    assert fluctuation < 1e-3  # eV/atom, while kinetic energy swings by ~10x more
    assert np.ptp(nve_emt.kinetic_energy) / nve_emt.n_atoms > 10 * fluctuation
    assert not nve_emt.bonds.broken and nve_emt.bonds.n_bonds == 32 * 12 // 2


def test_nve_drift_matches_a_hand_fitted_slope(nve_emt):
    time_ps = nve_emt.time_fs / 1000.0
    energy_mev_per_atom = 1000.0 * nve_emt.total_energy / nve_emt.n_atoms
    expected = hand_fitted_slope(time_ps, energy_mev_per_atom)
    assert_close(nve_emt.energy_drift, expected, TOL.fp64, "drift vs hand fit")


def test_nve_starts_at_rest_with_the_requested_seeded_velocities():
    atoms = make_fcc_cu(repeat=2, seed=0)
    runs = [
        run_md(atoms, EMT(), ensemble="nve", n_steps=1, log_interval=1, seed=s) for s in (3, 3, 4)
    ]
    first = [r.final_atoms.get_momenta() for r in runs]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.allclose(first[0], first[2])
    total_momentum = runs[0].final_atoms.get_momenta().sum(axis=0)
    assert_close(total_momentum, np.zeros(3), TOL.fp32, "centre-of-mass momentum")


def test_nvt_is_reproducible_and_thermostatted(tmp_path):
    atoms = make_fcc_cu(repeat=2, seed=0)
    kwargs = dict(
        ensemble="nvt",
        temperature_K=600.0,
        timestep_fs=2.0,
        n_steps=150,
        friction=0.05,
        log_interval=5,
        seed=7,
    )
    first = run_md(atoms, EMT(), trajectory_path=tmp_path / "a.traj", **kwargs)
    second = run_md(atoms, EMT(), **kwargs)
    np.testing.assert_array_equal(first.final_atoms.positions, second.final_atoms.positions)
    assert first.energy_drift is None
    assert 300.0 < first.temperature_mean < 900.0
    assert first.temperature_std > 0.0
    frames = read(tmp_path / "a.traj", ":")
    assert len(frames) == 150 // 5 + 1
    np.testing.assert_array_equal(frames[-1].positions, first.final_atoms.positions)


def test_nose_hoover_is_ases_without_constraints_and_applies_fixed_atoms():
    """``thermostat="nose-hoover"`` without constraints is ASE's ``NoseHooverChainNVT`` step
    for step (same start, 20 steps: equal to 1e-12); with ``FixAtoms`` the fixed atom stays
    put with zero momentum (ASE's own integrator lets it gather momentum in its copy of the
    momenta); other constraints and other ensembles are refused by name."""
    from ase.constraints import FixAtoms, FixBondLength
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    from equiforce.md.sampling import thermalise

    atoms = make_fcc_cu(repeat=1, seed=3)
    settings = dict(ensemble="nvt", thermostat="nose-hoover", thermostat_time_fs=20.0)
    settings.update(temperature_K=500.0, timestep_fs=1.0, n_steps=20, log_interval=20, seed=5)
    mine = run_md(atoms, EMT(), **settings)
    reference = atoms.copy()
    reference.calc = EMT()
    thermalise(reference, 500.0, np.random.default_rng(5))
    NoseHooverChainNVT(reference, units.fs, temperature_K=500.0, tdamp=20.0 * units.fs).run(20)
    final = mine.final_atoms
    np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final.get_momenta(), reference.get_momenta(), rtol=0, atol=1e-12)

    fixed = atoms.copy()
    fixed.set_constraint(FixAtoms([0]))
    held = run_md(fixed, EMT(), **settings).final_atoms
    assert np.array_equal(held.positions[0], atoms.positions[0])
    assert not held.get_momenta()[0].any() and np.abs(held.positions - atoms.positions).max() > 0
    fixed.set_constraint(FixBondLength(0, 1))
    with pytest.raises(ValueError, match=r"\['FixBondLengths'\]: the Nosé–Hoover thermostat"):
        run_md(fixed, EMT(), **settings)
    with pytest.raises(ValueError, match="nose-hoover thermostat is for NVT, not NVE"):
        run_md(atoms, EMT(), **{**settings, "ensemble": "nve"})
    with pytest.raises(ValueError, match="thermostat must be one of"):
        run_md(atoms, EMT(), **{**settings, "thermostat": "andersen"})


def test_a_single_atom_starts_at_rest():
    """The start velocities of one atom: its centre of mass at rest, so at rest (ASE's
    temperature rescaling after removing it gave NaN momenta); its NVE run stays put."""
    atom = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=[8.0, 8.0, 8.0], pbc=True)
    result = run_md(atom, EMT(), ensemble="nve", n_steps=2, log_interval=1)
    assert np.array_equal(result.final_atoms.get_momenta(), np.zeros((1, 3)))
    assert np.array_equal(result.final_atoms.positions, atom.positions)


def test_bussi_is_ases():
    """``thermostat="bussi"`` is ASE's ``Bussi`` drawing from the run's generator after the
    start velocities (same seed: 20 steps equal to 1e-12), with ``FixAtoms`` too."""
    from ase.constraints import FixAtoms
    from ase.md.bussi import Bussi

    from equiforce.md.sampling import thermalise

    atoms = make_fcc_cu(repeat=1, seed=3)
    fixed = atoms.copy()
    fixed.set_constraint(FixAtoms([0]))
    settings = dict(ensemble="nvt", thermostat="bussi", thermostat_time_fs=20.0)
    settings.update(temperature_K=500.0, timestep_fs=1.0, n_steps=20, log_interval=20, seed=5)
    for start in (atoms, fixed):
        final = run_md(start, EMT(), **settings).final_atoms
        reference = start.copy()
        reference.calc = EMT()
        rng = np.random.default_rng(5)
        thermalise(reference, 500.0, rng)
        Bussi(reference, units.fs, temperature_K=500.0, taut=20.0 * units.fs, rng=rng).run(20)
        np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(final.get_momenta(), reference.get_momenta(), atol=1e-12)
    assert np.array_equal(final.positions[0], fixed.positions[0])


def test_a_temperature_ramp_heats_as_asked_and_is_a_setting_of_the_run(tmp_path):
    """Langevin from 300 K ramped to 1500 K over 400 steps (32 Cu atoms, EMT, friction
    0.05/fs): the temperature follows the target (its last 100 steps average above 1200 K,
    while the constant-300 K run stays near 300 K); the result records the ramp; a ramp
    in NVE, a non-positive end and the extension of a ramped run are refused."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    settings = dict(ensemble="nvt", temperature_K=300.0, timestep_fs=2.0, friction=0.05)
    settings.update(n_steps=400, log_interval=10, seed=2)
    ramped = run_md(atoms, EMT(), final_temperature_K=1500.0, **settings)
    constant = run_md(atoms, EMT(), **settings)
    late = ramped.time_fs >= 600.0  # the last 100 steps
    assert ramped.temperature_K[late].mean() > 1200.0
    assert abs(constant.temperature_K[late].mean() - 300.0) < 60.0
    assert ramped.summary()["temperature_final_target_K"] == 1500.0
    np.testing.assert_allclose(
        ramped.target_temperature(np.array([0.0, 400.0, 800.0])), [300, 900, 1500]
    )
    with pytest.raises(ValueError, match="for NVT or NPT, not NVE"):
        run_md(atoms, EMT(), final_temperature_K=900.0, **{**settings, "ensemble": "nve"})
    with pytest.raises(ValueError, match="final temperature must be > 0 K"):
        run_md(atoms, EMT(), final_temperature_K=0.0, **settings)
    short = {**settings, "n_steps": 4, "log_interval": 2, "restart_path": tmp_path / "r.npz"}
    run_md(atoms, EMT(), final_temperature_K=900.0, **short)
    with pytest.raises(ValueError, match="started with temperature_ramp"):
        run_md(atoms, EMT(), final_temperature_K=900.0, **{**short, "n_steps": 8}, resume=True)


def test_bond_deviation_of_a_stretched_molecule():
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    frames = [h2.copy() for _ in range(3)]
    frames[1].positions[1, 2] = 0.84
    frames[2].positions[1, 2] = 0.70
    result = bond_length_deviation(frames)
    assert result.n_bonds == 1
    assert_close(result.max_deviation, 0.10, TOL.fp64, "max deviation")
    assert not result.broken
    broken = h2.copy()
    broken.positions[1, 2] = 1.5 * 2 * 0.31 + 0.01  # beyond 1.5 x (r_cov(H) + r_cov(H))
    assert bond_length_deviation([h2, broken]).broken


def test_bond_deviation_follows_bonds_to_periodic_images():
    primitive = bulk("Cu", "fcc", a=3.61)  # one atom, bonded to 12 images of itself
    expanded = primitive.copy()
    expanded.set_cell(primitive.cell * 1.01, scale_atoms=True)
    result = bond_length_deviation([primitive, expanded])
    assert result.n_bonds == 6  # each image pair once
    assert_close(result.max_deviation, 0.01 * 3.61 / np.sqrt(2), TOL.fp64, "max deviation")


def test_bond_deviation_needs_a_frame():
    with pytest.raises(ValueError, match="at least one frame"):
        bond_length_deviation([])


@pytest.mark.parametrize("ensemble", ["nvt", "nve"])
def test_tiny_mace_runs_20_steps(model64, tmp_path, ensemble):
    atoms = make_molecule("H2O", seed=2)
    trajectory = tmp_path / f"{ensemble}.xyz"
    result = run_md(
        atoms,
        EquiforceCalculator(model64),
        ensemble=ensemble,
        temperature_K=300.0,
        timestep_fs=0.5,
        n_steps=20,
        log_interval=5,
        trajectory_path=trajectory,
        seed=0,
    )
    assert result.n_steps == 20 and len(result.temperature_K) == 5
    assert np.isfinite(result.total_energy).all()
    assert (ensemble == "nve") == (result.energy_drift is not None)
    assert result.bonds.n_bonds == 2  # the two O-H bonds
    frames = read(trajectory, ":")
    assert len(frames) == 5 and "forces" in frames[-1].calc.results
    summary = json.loads(json.dumps(result.summary()))
    assert summary["ensemble"] == ensemble and summary["n_bonds"] == 2
    assert ensemble.upper() in format_md_summary(result)
    assert plot_md(result, tmp_path / "md.png").stat().st_size > 0


def test_md_arguments_are_checked():
    atoms = make_fcc_cu(repeat=1)
    with pytest.raises(ValueError, match="ensemble"):
        run_md(atoms, EMT(), ensemble="nph", n_steps=10)
    with pytest.raises(ValueError, match="log_interval"):
        run_md(atoms, EMT(), n_steps=5, log_interval=10)
    with pytest.raises(ValueError, match=".traj, .xyz or .extxyz"):
        run_md(atoms, EMT(), n_steps=5, log_interval=5, trajectory_path="out.pdb")
