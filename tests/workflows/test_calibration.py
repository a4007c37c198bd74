"""Calibration statistics of a committee: rank correlation, binned curve, per-structure maxima."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from equiforce.md.committee import CommitteeCalculator, force_spread_factors
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.testing.tolerances import TOL
from equiforce.workflows.calibration import (
    CommitteeErrors,
    calibration_curve,
    calibration_report,
    committee_errors,
    fit_spread_scales,
    scaled,
    spearman,
)


def test_spearman_is_one_for_a_monotonic_relation_and_minus_one_reversed():
    """Rank correlation ignores the shape of a monotonic relation."""
    x = np.linspace(0.1, 2.0, 50)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)


def test_calibration_curve_bins_by_spread_with_equal_counts():
    """Equal-count bins in spread order; a perfectly calibrated sample lies on the diagonal."""
    spread = np.arange(1, 21, dtype=float)
    errors = CommitteeErrors(error=spread.copy(), spread=spread, structure=np.arange(20) // 4)
    curve = calibration_curve(errors, n_bins=4)
    assert curve["count"] == [5, 5, 5, 5]
    np.testing.assert_allclose(curve["rms_error"], curve["rms_spread"], **vars(TOL.fp64))
    frame_error, frame_spread = errors.per_structure_max()
    np.testing.assert_array_equal(frame_error, [4.0, 8.0, 12.0, 16.0, 20.0])
    report = calibration_report(errors, n_bins=4)
    assert report["spearman_atoms"] == pytest.approx(1.0) and report["n_structures"] == 5


def test_committee_errors_measure_the_mean_force_against_the_reference():
    """Per-atom |F_mean - F_ref| and the calculator's spread, for EMT-labelled cells."""
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1)) for s in range(2)]
    members = [tiny_mace(torch.float64, seed=s) for s in (1, 2)]
    calculator = CommitteeCalculator(members)
    errors = committee_errors(calculator, frames)
    assert errors.error.shape == errors.spread.shape == (8,)
    last = frames[1].copy()
    last.calc = calculator
    expected = np.linalg.norm(last.get_forces() - frames[1].get_forces(), axis=1)
    np.testing.assert_allclose(errors.error[4:], expected, **vars(TOL.fp64))
    np.testing.assert_array_equal(errors.structure, [0] * 4 + [1] * 4)
    bare = frames[0].copy()
    bare.calc = None
    with pytest.raises(ValueError, match="structure 0 has no reference forces"):
        committee_errors(calculator, [bare])


def _nll(scale: float, error: np.ndarray, spread: np.ndarray) -> float:
    """Negative log-likelihood (up to constants) of 3-vector errors of norm ``error`` under
    isotropic Gaussians with E|dF|^2 = (scale spread)^2."""
    variance = (scale * spread) ** 2 / 3.0
    return float(np.sum(1.5 * np.log(variance) + error**2 / (2.0 * variance)))


def test_fitted_scales_are_the_maximum_likelihood_error_scale():
    """Errors drawn 2.5x wider than the spread give s ~ 2.5; the fitted s minimises the
    Gaussian likelihood exactly; errors of exactly twice the spread give s = 2, zero spreads are
    left out, and members that never disagree cannot be calibrated."""
    rng = np.random.default_rng(0)
    spread = rng.uniform(0.05, 0.5, 30000)
    vectors = 2.5 * spread[:, None] * rng.standard_normal((30000, 3)) / np.sqrt(3.0)
    error = np.linalg.norm(vectors, axis=1)
    energy_spread = rng.uniform(0.01, 0.1, 5000)
    energy_error = 0.7 * energy_spread * rng.standard_normal(5000)
    errors = CommitteeErrors(error, spread, np.arange(30000) // 6, energy_error, energy_spread)
    scales = fit_spread_scales(errors)
    assert scales["force_spread_scale"] == pytest.approx(2.5, rel=0.02)
    assert scales["energy_spread_scale"] == pytest.approx(0.7, rel=0.03)
    best = scales["force_spread_scale"]
    for other in (best * 0.999, best * 1.001):
        assert _nll(other, error, spread) > _nll(best, error, spread)
    exact = CommitteeErrors(np.array([0.2, 0.4, 0.6]), np.array([0.1, 0.2, 0.0]), np.zeros(3))
    assert fit_spread_scales(exact) == {"force_spread_scale": 2.0, "energy_spread_scale": None}
    with pytest.raises(ValueError, match="zero spread"):
        fit_spread_scales(CommitteeErrors(np.ones(3), np.zeros(3), np.zeros(3)))


def test_per_species_scales_are_each_species_maximum_likelihood_scale():
    """H errors 2.5x and C errors 0.7x their spread: one scale leaves H overconfident and C
    underconfident; per-species scales give 2.5 and 0.7 and make each species' mean
    |dF|^2 / spread^2 one; the overall scale is the one-scale fit; a species the committee
    errors lack keeps the overall scale in the calculator's factors."""
    rng = np.random.default_rng(1)
    species = np.where(np.arange(40000) % 4 == 0, "H", "C")
    spread = rng.uniform(0.05, 0.5, 40000)
    width = np.where(species == "H", 2.5, 0.7) * spread
    error = np.linalg.norm(width[:, None] * rng.standard_normal((40000, 3)), axis=1) / np.sqrt(3)
    errors = CommitteeErrors(error, spread, np.arange(40000) // 8, species=species)
    one = fit_spread_scales(errors)
    scales = fit_spread_scales(errors, per_species=True)
    assert scales["force_spread_scale"] == one["force_spread_scale"]
    assert scales["force_spread_scale_by_species"] == {
        "C": pytest.approx(0.7, rel=0.03),
        "H": pytest.approx(2.5, rel=0.03),
    }
    for fitted, expected_h in ((one, (2.5 / one["force_spread_scale"]) ** 2), (scales, 1.0)):
        after = scaled(errors, fitted)
        ratio = after.error**2 / after.spread**2
        assert np.mean(ratio) == pytest.approx(1.0, rel=1e-12)
        assert np.mean(ratio[species == "H"]) == pytest.approx(expected_h, rel=0.05)
    assert np.mean(ratio[species == "C"]) == pytest.approx(1.0, rel=1e-12)
    factors = force_spread_factors(["H", "O", "C"], 1.5, scales["force_spread_scale_by_species"])
    np.testing.assert_array_equal(factors[1], 1.5)
    with pytest.raises(ValueError, match="species"):
        fit_spread_scales(CommitteeErrors(error, spread, np.zeros(40000)), per_species=True)


@pytest.mark.parametrize("per_species", [False, True], ids=["one-scale", "per-species"])
def test_calibrate_stores_scales_the_committee_folder_applies(tmp_path, capsys, per_species):
    """``equiforce calibrate [--per-species]``: the folder's calculator reports the raw spread
    times the fitted scales (per atom its species' scale), the members' own predictions
    unchanged, which on the calibration data makes mean |dF|^2 / spread^2 (per species with
    ``--per-species``) and mean dE^2 / spread_E^2 one; model files given one by one stay
    uncalibrated; bad data is named."""
    from ase.io import read, write

    from equiforce.cli.main import main
    from equiforce.md.committee import MANIFEST_NAME, CommitteeCalculator
    from equiforce.models import save_model

    for seed in (1, 2, 3):
        save_model(tiny_mace(torch.float64, seed=seed), tmp_path / f"m{seed}.pt")
    manifest = {"members": ["m1.pt", "m2.pt", "m3.pt"]}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1)) for s in range(4)]
    write(tmp_path / "valid.xyz", frames, format="extxyz")
    frames = read(tmp_path / "valid.xyz", index=":")  # the structures as calibrate reads them
    argv = ["calibrate", str(tmp_path), str(tmp_path / "valid.xyz")]
    argv += ["--plot", str(tmp_path / "calibration.png")] + ["--per-species"] * per_species
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "force spread x" in out and "| after | Au (4) |" in out
    assert (tmp_path / "calibration.png").stat().st_size > 0
    stored = json.loads((tmp_path / MANIFEST_NAME).read_text())["calibration"]
    assert stored["after"]["mean_squared_error_over_spread"] == pytest.approx(1.0, rel=1e-10)
    by_species = stored.get("force_spread_scale_by_species")
    assert (sorted(by_species) == ["Au", "Cu"]) if per_species else by_species is None
    scales = (stored["force_spread_scale"], stored["energy_spread_scale"])
    calibrated = CommitteeCalculator.from_paths([tmp_path])
    raw = CommitteeCalculator.from_paths([tmp_path], calibrated=False)
    ratios, energy_ratios = [], []
    for frame in frames:
        got, want = frame.copy(), frame.copy()
        got.calc, want.calc = calibrated, raw
        np.testing.assert_allclose(got.get_forces(), want.get_forces(), **vars(TOL.fp64))
        spread = calibrated.results["force_uncertainty"]
        factors = [(by_species or {}).get(s, scales[0]) for s in frame.get_chemical_symbols()]
        np.testing.assert_allclose(spread, factors * raw.results["force_uncertainty"])
        np.testing.assert_array_equal(
            calibrated.results["committee_forces"], raw.results["committee_forces"]
        )
        error = np.linalg.norm(got.get_forces() - frame.get_forces(), axis=1)
        ratios.append(error**2 / spread**2)
        energy_spread = calibrated.results["energy_uncertainty"]
        assert energy_spread == pytest.approx(scales[1] * raw.results["energy_uncertainty"])
        energy_error = got.get_potential_energy() - frame.get_potential_energy()
        energy_ratios.append(energy_error**2 / energy_spread**2)
    ratios = np.concatenate(ratios)
    assert np.mean(ratios) == pytest.approx(1.0, rel=1e-10)
    symbols = np.concatenate([frame.get_chemical_symbols() for frame in frames])
    for symbol in ("Cu", "Au"):
        after = stored["after"]["by_species"][symbol]["mean_squared_error_over_spread"]
        assert np.mean(ratios[symbols == symbol]) == pytest.approx(after, rel=1e-10)
        if per_species:
            assert after == pytest.approx(1.0, rel=1e-10)
    assert np.mean(energy_ratios) == pytest.approx(1.0, rel=1e-10)
    files = CommitteeCalculator.from_paths([tmp_path / f"m{s}.pt" for s in (1, 2, 3)])
    assert files.force_spread_scale == files.energy_spread_scale == 1.0
    bare = frames[0].copy()
    bare.calc = None
    write(tmp_path / "unlabelled.xyz", [bare], format="extxyz")
    assert main(["calibrate", str(tmp_path), str(tmp_path / "unlabelled.xyz")]) == 2
    assert "unlabelled.xyz: structure 0 has no reference forces" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "m1.pt"), str(tmp_path / "valid.xyz")]) == 2
    assert "not a committee folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scales, named",
    [
        ({"force_spread_scale": 0.0}, "force_spread_scale must"),
        ({"energy_spread_scale": float("nan")}, "energy_spread_scale must"),
        ({"force_spread_scale_by_species": {"Au": -1.0}}, r"by_species\['Au'\] must"),
    ],
)
def test_a_committee_refuses_spread_scales_that_are_not_positive(scales, named):
    with pytest.raises(ValueError, match=named):
        CommitteeCalculator([tiny_mace(torch.float64, seed=1)], **scales)
