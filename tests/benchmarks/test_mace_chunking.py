"""Smoke test of ``python -m benchmarks.mace_chunking``: chunked vs one pass, memory skip."""

from __future__ import annotations

import json

from benchmarks.mace_chunking import main


def test_mace_chunking_compares_chunk_settings_and_skips_boxes_over_the_memory_limit(tmp_path):
    argv = ["--reps", "1", "2", "3", "--chunk-edges", "0", "--max-peak-gb", "0.001"]
    argv += ["--repeats", "1", "--backend", "reference", "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = json.loads(next(tmp_path.glob("mace_chunking_*.json")).read_text())["runs"]
    assert run["model"]["source"] == "preset mace-128-l1-al"
    first, second, skipped = run["results"]
    assert skipped["system"] == "fcc-108" and skipped["skipped"]
    for result in (first, second):
        assert set(result["ratios"]) == {"one pass"}
        for ratio in result["ratios"].values():
            assert ratio["parity"]["max_abs_force_diff_eV_per_A"] < 1e-4
