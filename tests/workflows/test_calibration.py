"""Calibration statistics of a committee: rank correlation, binned curve, per-structure maxima."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiforce.md.committee import CommitteeCalculator
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.testing.tolerances import TOL
from equiforce.workflows.calibration import (
    CommitteeErrors,
    calibration_curve,
    calibration_report,
    committee_errors,
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
