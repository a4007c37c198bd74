"""``python -m benchmarks.export_cpu_time``: its MD step (``md_step``), a smoke run with
``--md-step`` against mace-torch's own calculator (``.venv-mace``, which ``make test``
installs; skipped without it) and the package's C++ MD (``equiforce-run --md``), and
packages for two CPU targets timed together."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.export_cpu_time import main, md_step
from equiforce.md import EquiforceCalculator
from equiforce.testing import checks
from equiforce.testing.models import tiny_allegro
from equiforce.testing.structures import make_molecule

MACE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-mace" / "bin" / "python"


def test_md_step_moves_the_atoms_back_and_forth_and_returns_their_forces():
    model = tiny_allegro(torch.float64)
    start = make_molecule("CH3CH2OH", seed=2)
    atoms = start.copy()
    step = md_step(EquiforceCalculator(model), atoms)
    forces = [np.asarray(step()) for _ in range(4)]
    np.testing.assert_allclose(atoms.positions, start.positions, atol=1e-12, rtol=0)  # +d-d+d-d
    np.testing.assert_allclose(forces[0], forces[2], atol=1e-12, rtol=0)  # the same positions
    assert not np.allclose(forces[0], forces[1])
    want = checks.predict(model, [atoms])["forces"]
    np.testing.assert_allclose(forces[3], want, atol=1e-12, rtol=0)


@pytest.mark.slow  # one AOTInductor compile (~20 s), mace-torch and equiforce-run in children
@pytest.mark.skipif(not MACE_PYTHON.exists(), reason="no .venv-mace (make install-mace)")
def test_md_steps_of_eager_package_and_mace_torch_calculators_are_timed(tmp_path):
    argv = ["--preset", "mace-tiny", "--molecules", "acac", "--dtypes", "float64"]
    argv += ["--warmup", "1", "--repeats", "2", "--md-step", "--mace-python", str(MACE_PYTHON)]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    document = json.loads(next(tmp_path.glob("export_cpu_time_*.json")).read_text())
    assert document["measure"] == "md-step"
    (case,) = document["cases"]
    for name in ("eager", "exported", "mace-torch", "equiforce-run"):
        assert case["cpu_ms"][name]["median"] > 0
    assert case["equiforce-run"]["md_steps"] == 3  # --warmup + --repeats
    parity = case["parity"]
    assert parity["energy_eV"] < 1e-10 and parity["forces_eV_per_A"] < 1e-10
    assert parity["mace_torch_energy_eV"] < 1e-10  # its calculator, its neighbour list


@pytest.mark.slow  # two AOTInductor compiles of a MACE (~50 s)
@pytest.mark.skipif(platform.machine() != "x86_64", reason="--cpu-target: x86-64 only")
def test_packages_for_several_cpu_targets_are_timed_together_and_equal_eager(tmp_path, capsys):
    """``--cpu-targets native x86-64-v3``: a MACE package for this CPU and one for any AVX2
    CPU (its kernel library built for AVX2), timed in one interleaving; both equal eager to
    1e-10 in float64."""
    argv = ["--preset", "mace-tiny", "--molecules", "acac", "--dtypes", "float64"]
    argv += ["--warmup", "1", "--repeats", "2", "--mace-python", ""]
    argv += ["--cpu-targets", "native", "x86-64-v3", "--out", str(tmp_path)]
    assert main(argv) == 0
    (case,) = json.loads(next(tmp_path.glob("export_cpu_time_*.json")).read_text())["cases"]
    assert case["cpu_targets"] == ["native", "x86-64-v3"]
    for name in ("eager", "exported", "exported x86-64-v3"):
        assert case["cpu_ms"][name]["median"] > 0
    for key in ("energy_eV", "forces_eV_per_A"):
        assert case["parity"][key] < 1e-10 and case["parity"][f"{key} (x86-64-v3)"] < 1e-10
    assert "| x86-64-v3 CPU ms | x86-64-v3 / native |" in capsys.readouterr().out
