"""Smoke test of ``python -m benchmarks.allegro_inference``: allegro-tiny on one molecule."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.allegro_inference import main


def test_allegro_inference_times_the_tiny_preset_and_nequip_when_its_venv_exists(tmp_path):
    peers = Path(".venv-nequip/bin/python").exists()
    argv = ["--presets", "allegro-tiny", "--dtypes", "float32", "--systems", "molecule"]
    argv += ["--threads", "1", "--warmup", "0", "--repeats", "1", "--backend", "reference"]
    argv += ["--peers" if peers else "--no-peers", "--out", str(tmp_path)]
    assert main(argv) == 0
    document = json.loads(next(tmp_path.glob("allegro_inference_*.json")).read_text())
    (run,) = document["runs"]
    assert run["model"]["spec"]["l_max"] == 1 and run["model"]["spec"]["num_layers"] == 1
    (result,) = run["results"]
    expected = {"equiforce", "nequip-allegro"} if peers else {"equiforce"}
    assert set(result["implementations"]) == expected
