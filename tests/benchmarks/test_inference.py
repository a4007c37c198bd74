"""Smoke test of ``python -m benchmarks.inference``: one MACE preset on one molecule."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.inference import main


def test_inference_times_a_mace_preset_and_mace_torch_when_its_venv_exists(tmp_path):
    peers = Path(".venv-mace/bin/python").exists()
    argv = ["--presets", "mace-small", "--dtypes", "float32", "--systems", "molecule"]
    argv += ["--threads", "1", "--warmup", "0", "--repeats", "1", "--backend", "reference"]
    argv += ["--peers" if peers else "--no-peers", "--out", str(tmp_path)]
    assert main(argv) == 0
    document = json.loads(next(tmp_path.glob("inference_*.json")).read_text())
    assert document["command"].startswith("python -m benchmarks.inference --presets mace-small")
    (run,) = document["runs"]
    assert run["settings"]["kind"] == "inference" and run["model"]["source"] == "preset mace-small"
    (result,) = run["results"]
    assert result["n_atoms"] == 15
    assert set(result["implementations"]) == {"equiforce", "mace-torch"} if peers else {"equiforce"}
