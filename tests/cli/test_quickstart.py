"""The quickstart runs end to end (shortened); its model file feeds evaluate, md, calculator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from equiforce import EquiforceCalculator
from equiforce.cli.main import main
from equiforce.models import load_model


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    status = main(
        [
            "quickstart",
            "--out",
            str(out),
            "--budget",
            "8",
            "--configs",
            "30",
            "--md-steps",
            "20",
            "--no-progress",
        ]
    )
    assert status == 0
    return out


def test_quickstart_writes_model_metrics_plots_and_trajectory(quickstart_dir):
    summary = json.loads((quickstart_dir / "summary.json").read_text())
    for path in [summary["paths"][k] for k in ("model", "metrics", "learning_curve", "md_plot")]:
        assert Path(path).exists(), path
    metrics = json.loads((quickstart_dir / "metrics.json").read_text())["metrics"]
    assert {"energy_per_atom", "forces", "stress"} <= set(metrics)
    assert np.isfinite(summary["md"]["energy_drift_meV_per_atom_per_ps"])


def test_quickstart_model_feeds_evaluate_md_and_calculator(quickstart_dir, capsys):
    model_path = quickstart_dir / "model.pt"
    test_file = quickstart_dir / "data" / "test.xyz"
    assert (
        main(
            [
                "evaluate",
                str(model_path),
                str(test_file),
                "--json",
                str(quickstart_dir / "eval.json"),
            ]
        )
        == 0
    )
    assert (quickstart_dir / "eval.json").exists()
    assert (
        main(
            [
                "md",
                str(model_path),
                str(test_file),
                "--steps",
                "5",
                "--out",
                str(quickstart_dir / "md_cli"),
            ]
        )
        == 0
    )
    atoms = read(test_file, 0)
    atoms.calc = EquiforceCalculator(str(model_path))
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (len(atoms), 3)
    assert atoms.get_stress().shape == (6,)


def test_quickstart_trains_allegro(tmp_path):
    out = tmp_path / "allegro"
    status = main(
        [
            "quickstart",
            "--model",
            "allegro",
            "--out",
            str(out),
            "--budget",
            "4",
            "--configs",
            "20",
            "--md-steps",
            "10",
            "--no-progress",
        ]
    )
    assert status == 0
    model = load_model(out / "model.pt")
    assert model.family == "allegro"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["family"] == "allegro"
    assert np.isfinite(summary["test_metrics"]["metrics"]["forces"]["rmse"])
