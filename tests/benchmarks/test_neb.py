"""Smoke test of ``python -m benchmarks.neb``: the batched band against ASE's image by image."""

from __future__ import annotations

import json

import pytest

from benchmarks.neb import main


def test_neb_benchmark_times_both_and_compares_the_bands(tmp_path):
    argv = ["--preset", "allegro-tiny-al", "--images", "3", "--steps", "2"]
    assert main([*argv, "--timing-repeats", "1", "--out", str(tmp_path)]) == 0
    document = json.loads(next(tmp_path.glob("neb_*.json")).read_text())
    assert document["command"].startswith("python -m benchmarks.neb")
    for name in ("water-cluster", "Al-vacancy"):
        case = document["cases"][name]
        assert case["interior_images"] == 3 and case["model_calls"] == 3
        assert case["ase_over_equiforce"] == pytest.approx(
            case["ase_step_s"] / case["equiforce_step_s"]
        )
        assert case["max_position_difference_A"] < 1e-9
