"""Smoke test of ``python -m benchmarks.allegro_compile``: eager vs traced (aot_eager)."""

from __future__ import annotations

import json

from benchmarks.allegro_compile import main


def test_allegro_compile_interleaves_eager_and_compiled_workers(tmp_path):
    argv = ["--presets", "allegro-tiny", "--systems", "molecule", "--kinds", "inference"]
    argv += ["--compile-backend", "aot_eager", "--threads", "1", "--repeats", "1"]
    argv += ["--backend", "reference", "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = json.loads(next(tmp_path.glob("allegro_compile_*.json")).read_text())["runs"]
    assert run["settings"]["variants"] == [
        {
            "name": "compiled",
            "compile": True,
            "compile_backend": "aot_eager",
            "chunk_edges": None,
            "whole_graph": False,
            "export_backend": None,
        }
    ]
    (result,) = run["results"]
    assert result["implementations"]["compiled"]["info"]["compile"] is True
    parity = result["ratios"]["compiled"]["parity"]
    assert parity["max_abs_force_diff_eV_per_A"] < 1e-4 < parity["max_abs_force_eV_per_A"]
