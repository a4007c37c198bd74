"""Smoke tests of ``python -m benchmarks.acac_train`` (and its peer launcher).

The AcAc files come from ``../shared/data`` (skipped without them); the peers' runs need
their venvs (``make install-mace`` / ``make install-nequip``) and are skipped without them.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from benchmarks import acac
from benchmarks.acac_train import main, run_config
from benchmarks.common import DEFAULT_DATA_DIR, REPO_ROOT
from benchmarks.peer_training import mace_torch_arguments, nequip_config
from equiforce.data.extxyz import read_configurations
from equiforce.data.statistics import compute_statistics, read_isolated_atom_energies

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


def _results(out: Path) -> dict:
    (path,) = out.glob("acac_train_*/results.json")
    return json.loads(path.read_text())


def _assert_scored(results: dict, code: str) -> None:
    run = results["runs"][code]
    assert run["epochs_completed"] >= 1 and run["stop_reason"] == "time_budget", run
    for name in acac.TEST_SETS:
        errors = results["errors"][code][name]
        assert errors["forces"]["count"] == 10 * 15 * 3 and errors["forces"]["unit"] == "meV/Å"
        assert math.isfinite(errors["energy_per_atom"]["rmse"])


def test_equiforce_trains_for_the_budget_and_is_scored(tmp_path):
    argv = ["--preset", "mace-tiny", "--smoke", "--budget-s", "2", "--only", "ours"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    results = _results(tmp_path)
    assert results["command"].startswith("python -m benchmarks.acac_train --preset mace-tiny")
    assert list(results["runs"]) == ["equiforce"]
    _assert_scored(results, "equiforce")
    assert results["run_config"]["training"]["time_budget_s"] == 2.0


def _config(tmp_path, *argv):
    from benchmarks.acac_train import parse_args

    args = parse_args(["--data-dir", str(DEFAULT_DATA_DIR), *argv])
    split = acac.write_split(args.data_dir, tmp_path, **acac.SMOKE)
    return run_config(args, split, tmp_path / "peer"), split


def test_mace_torch_gets_the_settings_of_the_equiforce_run(tmp_path):
    config, split = _config(tmp_path, "--preset", "mace-small", "--budget-s", "60")
    arguments = mace_torch_arguments(config, tmp_path)
    for expected in ("--num_channels=32", "--max_L=1", "--correlation=3", "--lr=0.01",
                     "--radial_MLP=[64, 64, 64]", "--MLP_irreps=16x0e", "--forces_weight=100.0",
                     "--default_dtype=float32", "--batch_size=5", f"--train_file={split.train}",
                     "--interaction_first=RealAgnosticResidualInteractionBlock", "--ema"):
        assert expected in arguments
    (e0s,) = [a for a in arguments if a.startswith("--E0s=")]
    assert ast.literal_eval(e0s[len("--E0s=") :]).keys() == {1, 6, 8}


def test_nequip_gets_the_settings_and_statistics_of_the_equiforce_run(tmp_path):
    config, split = _config(tmp_path, "--preset", "allegro-l1", "--budget-s", "3725")
    isolated = read_isolated_atom_energies(split.isolated)
    statistics = compute_statistics(read_configurations(split.train), 5.0, isolated_atoms=isolated)
    values = nequip_config(config, statistics, tmp_path)
    model = values["training_module"]["model"]
    features = (model["num_scalar_features"], model["num_tensor_features"])
    assert model["l_max"] == 1 and features == (64, 16)
    assert model["readout_mlp_hidden_layers_width"] == 32
    assert values["training_module"]["optimizer"]["lr"] == 0.002
    assert values["trainer"]["max_time"] == "00:01:02:05"
    shift = statistics.mean_interaction_energy
    assert model["per_type_energy_shifts"] == pytest.approx(
        {s: isolated[s] + shift for s in ("H", "C", "O")}
    )


@pytest.mark.slow  # two short trainings of each code, ~35 s on two cores
@pytest.mark.parametrize(
    "preset, venv", [("mace-tiny", ".venv-mace"), ("allegro-l1-32", ".venv-nequip")]
)
def test_both_codes_train_in_parallel_and_are_scored_alike(tmp_path, preset, venv):
    python = REPO_ROOT / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python} not found (make install-{venv.split('-')[1]})")
    argv = ["--preset", preset, "--smoke", "--budget-s", "2", "--peer-python", str(python)]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    results = _results(tmp_path)
    equiforce, peer = results["runs"]
    _assert_scored(results, equiforce)
    _assert_scored(results, peer)
    assert "torch" in results["runs"][peer]["peer_versions"]
