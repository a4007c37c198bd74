"""Scaling fits of ``equiforce bench`` reports on made-up results."""

from __future__ import annotations

import pytest

from equiforce.workflows.bench.report import scaling_exponents


def _box(atoms: int, ms: float, mb: float) -> dict:
    data = {"timing": {"median_ms": ms}, "memory": {"peak_minus_baseline_mb": mb}}
    return {"system": f"box-{atoms}", "n_atoms": atoms, "implementations": {"ours": data}}


def test_scaling_exponents_fit_log_log_slopes_over_boxes_only():
    molecule = {**_box(15, 1.0, 1.0), "system": "molecule"}
    results = [molecule, _box(1000, 10.0, 5.0), _box(10000, 100.0, 50.0), _box(100000, 1e4, 500.0)]
    slopes = scaling_exponents({"results": results})["ours"]
    # time: 1.0 then 2.0 decades per decade of atoms -> least-squares slope 1.5
    assert slopes == pytest.approx({"time": 1.5, "memory": 1.0, "n_boxes": 3})
    assert scaling_exponents({"results": [molecule, _box(1000, 10.0, 5.0)]}) == {}
