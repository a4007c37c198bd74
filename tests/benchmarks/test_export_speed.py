"""Smoke test of ``python -m benchmarks.export_speed``: eager vs the exported package."""

from __future__ import annotations

import json

import pytest

from benchmarks.export_speed import main


@pytest.mark.slow  # one AOTInductor compile, ~40 s
def test_export_speed_times_the_exported_package_beside_eager(tmp_path):
    argv = ["--presets", "allegro-tiny", "--dtypes", "float64", "--no-compiled"]
    argv += ["--threads", "1", "--warmup", "1", "--repeats", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = json.loads(next(tmp_path.glob("export_speed_*.json")).read_text())["runs"]
    (result,) = run["results"]
    assert result["implementations"]["exported"]["info"]["export_backend"] == "fast"
    parity = result["ratios"]["exported"]["parity"]
    assert parity["max_abs_force_diff_eV_per_A"] < 1e-10 < parity["max_abs_force_eV_per_A"]
