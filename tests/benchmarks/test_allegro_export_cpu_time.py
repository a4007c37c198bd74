"""Smoke test of ``python -m benchmarks.allegro_export_cpu_time``: our exported Allegro against
nequip-allegro's own AOTInductor package (needs the AcAc data and ``.venv-nequip``, which
``make test`` installs before the suite; skipped without them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.allegro_export_cpu_time import main
from benchmarks.common import DEFAULT_DATA_DIR

NEQUIP_PYTHON = Path(__file__).resolve().parents[2] / ".venv-nequip" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not NEQUIP_PYTHON.exists(), reason="no .venv-nequip (make install-nequip)")
@pytest.mark.skipif(
    not (Path(DEFAULT_DATA_DIR) / "acac").is_dir(), reason="shared AcAc data absent"
)
@pytest.mark.parametrize("measure", [[], ["--md-step"]], ids=["call", "md-step"])
def test_both_packages_timed_on_one_molecule_and_equal_to_eager(tmp_path, measure):
    argv = ["--molecules", "acac", "--dtypes", "float64", "--warmup", "1", "--repeats", "2"]
    argv += measure  # md-step: each behind its calculator, an odd number of steps timed
    assert main([*argv, "--nequip-python", str(NEQUIP_PYTHON), "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("allegro_export_cpu_time_*.json")
    (case,) = json.loads(path.read_text())["cases"]
    assert case["molecule"] == "acac" and case["n_atoms"] == 15
    for name in ("eager", "exported", "nequip-aoti"):
        assert case["cpu_ms"][name]["median"] > 0
    parity = case["parity"]
    assert parity["energy_eV"] < 1e-10 and parity["forces_eV_per_A"] < 1e-10
    assert parity["nequip_energy_eV"] < 1e-10 and parity["nequip_forces_eV_per_A"] < 1e-10
