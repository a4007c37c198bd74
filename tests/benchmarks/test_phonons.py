"""Smoke test of ``python -m benchmarks.phonons``: equiforce's force constants vs ASE's."""

from __future__ import annotations

import json

import pytest

from benchmarks.phonons import main


def test_phonons_benchmark_times_both_and_compares_frequencies(tmp_path):
    argv = ["--preset", "allegro-tiny-al", "--supercell", "2", "--timing-repeats", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    document = json.loads(next(tmp_path.glob("phonons_*.json")).read_text())
    assert document["command"].startswith("python -m benchmarks.phonons")
    for name in ("Al-fcc", "AlO-rocksalt"):
        case = document["cases"][name]
        assert case["supercell"] == [2, 2, 2] and case["equiforce_s"] > 0
        assert case["ase_over_equiforce"] == pytest.approx(case["ase_s"] / case["equiforce_s"])
        assert case["max_frequency_difference_THz"] < 0.05
