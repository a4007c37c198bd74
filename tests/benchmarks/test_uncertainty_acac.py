"""Smoke test of ``python -m benchmarks.uncertainty_acac``: two tiny members, 10 test frames."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.common import DEFAULT_DATA_DIR
from benchmarks.uncertainty_acac import main

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


def test_committee_is_trained_and_its_calibration_scored(tmp_path):
    """Both test sets get a finite rank correlation and a calibration curve, and their mean
    |dF|^2 / spread^2 raw and with the scales fitted on the validation frames (one scale:
    the raw ratio over the scale squared; per species for H, C and O); the figure exists."""
    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("uncertainty_acac_*/results.json")
    results = json.loads(path.read_text())
    assert results["command"] == f"python -m benchmarks.uncertainty_acac --smoke --out {tmp_path}"
    assert len(results["members"]) == 2
    for name in ("test_MD_300K", "test_MD_600K"):
        report = results["reports"][name]
        assert report["n_structures"] == 10 and report["n_atoms"] == 150
        assert math.isfinite(report["spearman_atoms"]) and report["spread_mean_meV_A"] > 0
        assert sum(report["calibration"]["count"]) == 150
        ratios = results["calibrated"][name]
        one = results["scales"]["one scale"]["force_spread_scale"]
        assert ratios["one scale"]["all"] == pytest.approx(ratios["raw"]["all"] / one**2)
        per_species = results["scales"]["per species"]["force_spread_scale_by_species"]
        assert sorted(per_species) == ["C", "H", "O"]
        assert set(ratios["per species"]) == {"all", "C", "H", "O"}
        assert all(math.isfinite(value) for value in ratios["per species"].values())
    assert (path.parent / "calibration.png").stat().st_size > 0
