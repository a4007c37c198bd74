"""``python -m benchmarks.export_cpu_time``: its MD step (``md_step``) and a smoke run with
``--md-step`` against mace-torch's own calculator (``.venv-mace``, which ``make test``
installs; skipped without it)."""

from __future__ import annotations

import json
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


@pytest.mark.slow  # one AOTInductor compile (~20 s) and mace-torch in a child
@pytest.mark.skipif(not MACE_PYTHON.exists(), reason="no .venv-mace (make install-mace)")
def test_md_steps_of_eager_package_and_mace_torch_calculators_are_timed(tmp_path):
    argv = ["--preset", "mace-tiny", "--molecules", "acac", "--dtypes", "float64"]
    argv += ["--warmup", "1", "--repeats", "2", "--md-step", "--mace-python", str(MACE_PYTHON)]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    document = json.loads(next(tmp_path.glob("export_cpu_time_*.json")).read_text())
    assert document["measure"] == "md-step"
    (case,) = document["cases"]
    for name in ("eager", "exported", "mace-torch"):
        assert case["cpu_ms"][name]["median"] > 0
    parity = case["parity"]
    assert parity["energy_eV"] < 1e-10 and parity["forces_eV_per_A"] < 1e-10
    assert parity["mace_torch_energy_eV"] < 1e-10  # its calculator, its neighbour list
