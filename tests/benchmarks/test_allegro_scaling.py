"""Smoke test of ``python -m benchmarks.allegro_scaling``: two small fcc boxes, whole graph."""

from __future__ import annotations

import json

from benchmarks.allegro_scaling import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_allegro_scaling_fits_exponents_plots_and_combines_runs(tmp_path):
    argv = ["--reps", "2", "1", "--whole", "--threads", "1", "--warmup", "0", "--repeats", "1"]
    argv += ["--backend", "reference", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    (path,) = (tmp_path / "run").glob("allegro_scaling_*.json")
    (run,) = json.loads(path.read_text())["runs"]
    assert [r["system"] for r in run["results"]] == ["fcc-4", "fcc-32"]
    assert set(run["scaling_exponents"]) == {"equiforce", "whole graph"}
    assert path.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    plot = tmp_path / "combined.png"
    assert main(["--combine", str(path), str(path), "--plot-out", str(plot)]) == 0
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
