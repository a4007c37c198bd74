"""Smoke test of ``python -m benchmarks.allegro_profile``: allegro-tiny, nequip if present."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.allegro_profile import main


def test_allegro_profile_profiles_the_tiny_preset_and_nequip_when_its_venv_exists(tmp_path):
    peers = Path(".venv-nequip/bin/python").exists()
    argv = ["--presets", "allegro-tiny", "--dtypes", "float32", "--systems", "molecule"]
    argv += ["--kinds", "inference", "--threads", "1", "--warmup", "0", "--repeats", "1"]
    argv += ["--peers" if peers else "--no-peers", "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = json.loads(next(tmp_path.glob("allegro_profile_*.json")).read_text())["runs"]
    (result,) = run["results"]
    profiled = {impl for impl, data in result["implementations"].items() if data["profile"]}
    assert profiled == ({"equiforce", "nequip-allegro"} if peers else {"equiforce"})
