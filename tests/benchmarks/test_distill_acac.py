"""Smoke test of ``python -m benchmarks.distill_acac``: a random tiny teacher, one student."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.common import DEFAULT_DATA_DIR
from benchmarks.distill_acac import main
from equiforce.models import save_model
from equiforce.models.presets import preset_potential

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


def test_distilled_and_dft_only_students_are_trained_and_scored(tmp_path):
    teacher = save_model(preset_potential("mace-tiny"), tmp_path / "teacher.pt")
    argv = ["--smoke", "--teacher-model", str(teacher), "--students", "4:0", "--budget-s", "1"]
    assert main([*argv, "--rattle", "0.01", "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["command"].startswith("python -m benchmarks.distill_acac --smoke")
    assert results["distill_config"]["student"]["num_channels"] == 4
    (student,) = results["students"]
    for entry in (results["teacher"], student["distilled"], student["baseline"]):
        forces = entry["errors"]["test_MD_300K"]["forces"]
        assert forces["count"] == 10 * 15 * 3 and math.isfinite(forces["rmse"])
    assert student["baseline"]["epochs"] >= 1 and student["distilled"]["epochs"] >= 1
