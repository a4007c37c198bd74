"""``--precision`` on ``evaluate`` and ``md``: a saved float64 model runs in another mode."""

from __future__ import annotations

import json

import pytest
from ase.io import write

from equiforce.cli.main import main
from equiforce.models import save_model
from equiforce.precision_audit import SYMMETRY_RTOL
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    save_model(tiny_mace(), folder / "model.pt")
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1)) for seed in range(3)]
    write(folder / "data.xyz", frames, format="extxyz")
    return folder


def _forces_rmse(files, *extra) -> float:
    out = files / f"metrics{len(extra)}.json"
    argv = ["evaluate", str(files / "model.pt"), str(files / "data.xyz"), "--json", str(out)]
    assert main([*argv, *extra]) == 0
    return json.loads(out.read_text())["metrics"]["forces"]["rmse"]


def test_evaluate_runs_a_float64_model_in_bf16_mixed(files):
    reference = _forces_rmse(files)
    low = _forces_rmse(files, "--precision", "bf16-mixed")
    assert low != reference
    assert abs(low - reference) <= SYMMETRY_RTOL["bf16"] * reference


def test_md_runs_in_fp16_mixed(files, tmp_path):
    out = tmp_path / "md"
    argv = ["md", str(files / "model.pt"), str(files / "data.xyz"), "--ensemble", "nve"]
    argv += ["--steps", "4", "--log-interval", "2", "--precision", "fp16-mixed", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "md_summary.json").read_text())
    assert summary["n_steps"] == 4


def test_unknown_precision_is_refused(files):
    with pytest.raises(SystemExit):
        main(["evaluate", str(files / "model.pt"), str(files / "data.xyz"), "--precision", "fp8"])
