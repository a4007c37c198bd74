"""Smoke test of ``python -m benchmarks.memory_allegro``: tiny fcc boxes."""

from __future__ import annotations

import json

from benchmarks.memory_allegro import main, measure


def test_measure_reports_memory_and_time_per_atom():
    result = measure("allegro-tiny-al", "float32", reps=2, repeats=2, seed=0)
    assert result["n_atoms"] == 32 and result["n_edges"] > 0 and len(result["call_ms"]) == 2
    assert result["all_in_peak_mb"] >= result["baseline_mb"] > 0
    assert result["kb_per_atom"] == result["all_in_peak_mb"] * 1024 / result["n_atoms"]


def test_main_runs_a_worker_per_size_and_skips_one_predicted_above_the_limit(tmp_path):
    argv = ["--reps", "1", "40", "--max-peak-gb", "0.01", "--out", str(tmp_path)]
    assert main(argv) == 0
    (path,) = tmp_path.glob("memory_allegro_*.json")
    document = json.loads(path.read_text())
    first, second = document["results"]
    assert first["n_atoms"] == 4 and first["us_per_atom"] > 0 and first["cpu_us_per_atom"] > 0
    assert "skipped" in second and "command" in document
