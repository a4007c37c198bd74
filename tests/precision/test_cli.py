"""``--precision`` on ``evaluate`` and ``md``: a saved float64 model runs in another mode."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from ase.io import write

from equiforce.cli import train as cli_train
from equiforce.cli.main import main
from equiforce.models import load_model, save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.config import load_config
from equiforce.typed_config import ConfigError
from equiforce.workflows.precision_audit import SYMMETRY_RTOL

from ..train.conftest import config_dict


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


def test_train_precision_flag_overrides_the_config(tmp_path, files):
    values = config_dict(
        tmp_path / "run", files / "data.xyz", max_epochs=1, stage_two={"enabled": False}
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="model.dtype"):  # the tiny MACE sets float64
        cli_train.main([str(path), "--precision", "bf16-mixed"])
    values["model"].pop("dtype")
    path.write_text(yaml.safe_dump(values))
    assert cli_train.main([str(path), "--precision", "bf16-mixed"]) == 0
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.precision.mode == "bf16-mixed"
    assert load_model(tmp_path / "run" / "model.pt").dtype == torch.float32
