"""Smoke test of ``python -m benchmarks.compress_acac``: a random tiny teacher, one rung."""

from __future__ import annotations

import json

import pytest

from benchmarks.common import DEFAULT_DATA_DIR
from benchmarks.compress_acac import main
from equiforce.models import save_model
from equiforce.models.presets import preset_potential

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


@pytest.mark.slow
def test_search_chooses_a_model_and_times_it_on_one_and_64_molecules(tmp_path):
    """The run record, the tolerance from the teacher's test error, the choice, the speed-ups."""
    teacher = save_model(preset_potential("mace-tiny"), tmp_path / "teacher.pt")
    argv = [
        "--smoke", "--teacher-model", str(teacher), "--ladder", '[{"num_channels": 4}]',
        "--student-epochs", "1", "--budget-s", "30", "--no-compile", "--no-export",
        "--md-steps", "2", "--repeats", "2", "--tol-factor", "100", "--modes", "float32",
        "float64", "--out", str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["command"].startswith("python -m benchmarks.compress_acac --smoke")
    teacher_rmse = results["teacher_test_errors"]["test_MD_300K"]["forces"]["rmse"]
    assert results["force_tol"] == pytest.approx(100 * teacher_rmse)
    assert "estimated total" in results["plan"] and results["search_s"] > 0
    assert results["chosen"]["accepted"]
    assert {row["model"] for row in results["candidates"]} == {"input", "num_channels-4"}
    for system in ("1_acac", "64_acac"):
        entry = results["speedups"][system]
        assert entry["speedup"] > 0 and entry["chosen"]["n_atoms"] == 15 * int(system[:-5])
