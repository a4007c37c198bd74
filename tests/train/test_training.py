"""End-to-end training runs: outputs, determinism, learning, time budget, divergence."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from ase.io import write

from equiforce.data.ondisk import preprocess
from equiforce.models import load_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu, make_molecule
from equiforce.train import ema as ema_module
from equiforce.train import trainer as trainer_module
from equiforce.train.checkpoint import load_checkpoint
from equiforce.train.config import RunConfig
from equiforce.train.metrics import CSV_COLUMNS, read_metrics_csv
from equiforce.train.run import _evaluate_test_set, train
from equiforce.train.trainer import NonFiniteLossError, RunPaths

from .conftest import assert_same_rows, config_dict, make_config


def test_run_writes_model_checkpoints_metrics_and_curve(reference_run):
    result = reference_run
    assert result.stop_reason == "max_epochs" and result.epochs_completed == 3
    rows = read_metrics_csv(result.metrics_csv)
    assert [row["epoch"] for row in rows] == [1.0, 2.0, 3.0]
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [row["stage"] for row in rows] == ["main", "main", "stage_two"]
    assert rows[-1]["lr"] == pytest.approx(0.002)
    assert result.learning_curve.stat().st_size > 0
    checkpoint = load_checkpoint(result.last_checkpoint)
    assert checkpoint["progress"]["epochs_done"] == 3
    # the exported model is the best epoch's EMA model and loads as a plain model file
    best = load_checkpoint(result.best_checkpoint)
    model = load_model(result.model_path)
    for name, value in model.state_dict().items():
        assert torch.equal(value, best["model"]["state_dict"][name])
    assert load_model(result.last_checkpoint).type_names == ["Cu", "Au"]


def test_ema_weights_are_evaluated_not_raw_weights(reference_run):
    checkpoint = load_checkpoint(reference_run.last_checkpoint)
    evaluated, raw = checkpoint["model"]["state_dict"], checkpoint["train_state_dict"]
    assert any(not torch.equal(evaluated[name], raw[name]) for name in raw)


def test_loss_decreases_on_a_tiny_problem(reference_run):
    rows = read_metrics_csv(reference_run.metrics_csv)
    main = [row for row in rows if row["stage"] == "main"]
    assert main[-1]["valid_loss"] < main[0]["valid_loss"]
    assert main[-1]["valid_forces_rmse"] < main[0]["valid_forces_rmse"]


def test_fixed_seed_gives_identical_runs(tmp_path, emt_train_file, reference_run):
    again = train(make_config(tmp_path / "again", emt_train_file))
    assert_same_rows(
        read_metrics_csv(again.metrics_csv), read_metrics_csv(reference_run.metrics_csv)
    )
    first = load_checkpoint(reference_run.last_checkpoint)["train_state_dict"]
    second = load_checkpoint(again.last_checkpoint)["train_state_dict"]
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_time_budget_stops_cleanly_with_outputs_and_test_metrics(tmp_path, emt_train_file):
    values = config_dict(tmp_path, emt_train_file, time_budget_s=1e-3, max_epochs=50)
    values["data"]["test_file"] = str(emt_train_file)
    result = train(RunConfig.from_dict(values))
    assert result.stop_reason == "time_budget"
    assert result.epochs_completed == 1
    assert math.isfinite(result.final_metrics["valid_loss"])
    assert load_model(result.model_path).type_names == ["Cu", "Au"]
    test_metrics = json.loads(result.test_metrics_path.read_text())
    assert test_metrics["n_configs"] == 12
    assert test_metrics["metrics"]["forces"]["count"] == 12 * 4 * 3
    # the same test set as a preprocessed directory, streamed: the same errors
    preprocess(emt_train_file, tmp_path / "test_pre", None, 4.0, shard_size=5)
    values["data"]["test_file"] = str(tmp_path / "test_pre")
    config = RunConfig.from_dict(values)
    path = _evaluate_test_set(config, RunPaths(Path(values["output_dir"])))
    from_directory = json.loads(path.read_text())
    for name, stats in test_metrics["metrics"].items():
        assert from_directory["metrics"][name]["rmse"] == pytest.approx(stats["rmse"], rel=1e-10)


def test_the_kernel_library_is_built_before_the_time_budget_starts(
    tmp_path, emt_train_file, monkeypatch
):
    """A first run on a fresh checkout compiles the kernel library (~75 s): not training
    time. Here the build moves the trainer's clock by 1000 s; the budget (60 s) and the
    epochs' wall time leave it out."""
    offset = [0.0]
    built = []

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return time.monotonic() + offset[0]

    def build():
        offset[0] += 1000.0
        built.append(True)

    monkeypatch.setattr(trainer_module, "time", Clock)
    monkeypatch.setattr(trainer_module, "kernel_ops", build)
    values = config_dict(tmp_path, emt_train_file, time_budget_s=60.0)
    result = train(RunConfig.from_dict(values))
    assert built == [True]
    assert result.stop_reason == "max_epochs" and result.epochs_completed == 3
    assert result.final_metrics["wall_s"] < 500


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, emt_train_file, monkeypatch
):
    """Weights turned to NaN after the first step of epoch 2 make the next loss NaN."""
    update = ema_module.ExponentialMovingAverage.update
    calls = []

    def diverging_update(self, model):
        update(self, model)
        calls.append(1)
        if len(calls) == 4:  # 3 steps per epoch: first step of epoch 2
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    monkeypatch.setattr(ema_module.ExponentialMovingAverage, "update", diverging_update)
    config = make_config(tmp_path, emt_train_file)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 2.*last good checkpoint"):
        train(config)
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert checkpoint["progress"]["epochs_done"] == 1
    for value in checkpoint["train_state_dict"].values():
        assert torch.isfinite(value).all()
    assert len(read_metrics_csv(tmp_path / "metrics.csv")) == 1


def test_resume_without_checkpoint_is_an_error(tmp_path, emt_train_file):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(make_config(tmp_path, emt_train_file), resume=True)


def test_molecules_without_stress_train_beside_crystals(tmp_path):
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed)) for seed in range(4)]
    frames += [emt_labelled(make_molecule("CH3CH2OH", seed=seed)) for seed in range(4)]
    data = tmp_path / "mixed.xyz"
    write(data, frames, format="extxyz")
    config = make_config(tmp_path / "out", data, max_epochs=1, stage_two={"enabled": False})
    result = train(config)
    for name in ("train_loss", "valid_loss", "train_stress_rmse", "valid_forces_rmse"):
        assert math.isfinite(result.final_metrics[name]), name
    assert load_model(result.model_path).type_names == ["H", "C", "O", "Cu", "Au"]
