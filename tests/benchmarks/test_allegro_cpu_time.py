"""Smoke test of ``python -m benchmarks.allegro_cpu_time`` (needs nequip-allegro: run it with
``.venv-nequip/bin/python -m pytest``; skipped elsewhere)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("allegro")

from benchmarks.allegro_cpu_time import main  # noqa: E402


@pytest.mark.parametrize("kind", ["inference", "train-step"])
def test_cpu_time_of_both_codes_interleaved_with_parity(tmp_path, kind):
    argv = ["--systems", "molecule", "--warmup", "1", "--repeats", "3", "--out", str(tmp_path)]
    assert main([*argv, "--kind", kind]) == 0
    (path,) = tmp_path.glob("allegro_cpu_time_*.json")
    (result,) = json.loads(path.read_text())["results"]
    assert result["kind"] == kind
    assert len(result["cpu_ms"]["equiforce"]) == len(result["cpu_ms"]["nequip-allegro"]) == 3
    assert result["parity"]["forces"] < 1e-4 and result["cpu_ratio"] > 0
