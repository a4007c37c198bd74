"""Smoke test of ``python -m benchmarks.mace_train_step``: training steps on a batch of two."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.mace_train_step import main


def test_mace_train_step_times_training_steps_and_mace_torch_when_its_venv_exists(tmp_path):
    peers = Path(".venv-mace/bin/python").exists()
    argv = ["--presets", "mace-small", "--systems", "batch2", "--warmup", "0", "--repeats", "1"]
    argv += ["--backend", "reference", "--peers" if peers else "--no-peers", "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = json.loads(next(tmp_path.glob("mace_train_step_*.json")).read_text())["runs"]
    assert run["settings"]["kind"] == "train" and run["settings"]["threads"] == 1
    (result,) = run["results"]
    assert result["implementations"]["equiforce"]["info"]["kind"] == "train"
    if peers:
        parity = result["ratios"]["mace-torch"]["parity"]
        assert parity["max_abs_force_diff_eV_per_A"] < 1e-4


def test_phases_profiles_forward_forces_and_parameter_backward(tmp_path, capsys):
    argv = ["--phases", "--presets", "mace-small", "--systems", "molecule", "--warmup", "0"]
    argv += ["--repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads(next(tmp_path.glob("mace_train_phases_*.json")).read_text())
    (case,) = record["cases"]
    assert list(case["phase_ms"]) == ["forward", "forces backward", "parameter backward"]
    assert all(ms > 0 for ms in case["phase_ms"].values())
    # the parameter backward runs the double backward of the edge tensor product kernels
    assert any("cwtp" in op for op, _ in case["ops"]["parameter backward"])
    assert "forces backward" in capsys.readouterr().out
