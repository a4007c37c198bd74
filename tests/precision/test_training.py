"""Training in every precision mode; fp16 loss scaling skips and counts overflowing steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from ase.io import write

from equiforce.models import load_model
from equiforce.precision import MODES, DynamicLossScaler, current_policy
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.checkpoint import load_checkpoint
from equiforce.train.config import RunConfig
from equiforce.train.run import train
from equiforce.train.trainer import NonFiniteLossError

from ..train.conftest import TINY_MODELS, assert_same_rows, config_dict

STEPS_PER_EPOCH = 3  # 9 training structures, batch 3


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.xyz"
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1)) for seed in range(12)]
    write(path, frames, format="extxyz")
    return path


def _config(out: Path, data: Path, family: str = "mace", epochs: int = 2, **precision):
    values = config_dict(
        out, data, TINY_MODELS[family], max_epochs=epochs, stage_two={"enabled": False}
    )
    values["model"].pop("dtype")
    values["data"]["test_file"] = str(data)
    values["precision"] = precision
    return RunConfig.from_dict(values)


@pytest.mark.parametrize(
    ("family", "mode"),
    [("mace", mode) for mode in MODES] + [("allegro", "bf16-mixed"), ("allegro", "fp16-mixed")],
)
def test_every_mode_trains_and_evaluates(tmp_path, data_file, family, mode):
    result = train(_config(tmp_path, data_file, family, mode=mode))
    assert result.epochs_completed == 2
    model = load_model(result.model_path)
    assert current_policy(model) == MODES[mode]  # the policy travels in the model file
    assert model.dtype == MODES[mode].torch_dtype
    assert model.spec.dtype == MODES[mode].model_dtype
    assert all(torch.isfinite(p).all() for p in model.parameters())
    test = json.loads(result.test_metrics_path.read_text())["metrics"]
    assert math.isfinite(test["forces"]["rmse"]) and math.isfinite(test["energy"]["rmse"])
    row = result.final_metrics
    assert math.isfinite(row["valid_forces_rmse"])
    assert row["skipped_steps"] >= 0
    assert math.isnan(row["loss_scale"]) != MODES[mode].needs_loss_scaling


def _overflow_on_calls(monkeypatch, calls: set[int]) -> None:
    """Make ``scale_loss`` return an overflowing loss on the given (1-based) calls."""
    original = DynamicLossScaler.scale_loss
    count = {"n": 0}

    def scale_loss(self, loss):
        count["n"] += 1
        scaled = original(self, loss)
        return scaled * 1e300 if count["n"] in calls else scaled

    monkeypatch.setattr(DynamicLossScaler, "scale_loss", scale_loss)


def test_fp16_step_with_infinite_gradients_is_skipped_and_counted(tmp_path, data_file, monkeypatch):
    _overflow_on_calls(monkeypatch, {2})
    config = _config(tmp_path, data_file, mode="fp16-mixed", loss_scale_init=1.0)
    result = train(config)
    history = load_checkpoint(result.last_checkpoint)["progress"]["history"]
    assert [row["skipped_steps"] for row in history] == [1, 0]
    checkpoint = load_checkpoint(result.last_checkpoint)
    assert checkpoint["scaler"]["skipped_total"] == 1
    assert checkpoint["scaler"]["scale"] == 0.5  # backed off once, no growth in 5 good steps
    steps = {int(s["step"]) for s in checkpoint["optimizer"]["state"].values()}
    assert steps == {2 * STEPS_PER_EPOCH - 1}  # the skipped step never reached the optimizer
    weights = checkpoint["train_state_dict"].values()
    assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())
    assert "step skipped" in (tmp_path / "train.log").read_text()


def test_fp16_run_that_keeps_overflowing_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, data_file, monkeypatch
):
    _overflow_on_calls(monkeypatch, {4, 5})  # the first two steps of epoch 2
    config = _config(
        tmp_path, data_file, mode="fp16-mixed", loss_scale_init=1.0, max_skipped_steps=2
    )
    with pytest.raises(NonFiniteLossError, match="consecutive steps.*last good checkpoint"):
        train(config)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["progress"]["epochs_done"] == 1


def test_fp16_resume_repeats_the_uninterrupted_run_exactly(tmp_path, data_file, monkeypatch):
    _overflow_on_calls(monkeypatch, {2, 5})  # the scale changes in both epochs
    settings = {"mode": "fp16-mixed", "loss_scale_init": 4.0, "loss_scale_growth_interval": 2}
    full = train(_config(tmp_path / "full", data_file, **settings))
    _overflow_on_calls(monkeypatch, {2})
    train(_config(tmp_path / "split", data_file, epochs=1, **settings))
    _overflow_on_calls(monkeypatch, {2})  # call 2 of the resumed process = step 5 overall
    resumed = train(_config(tmp_path / "split", data_file, **settings), resume=True)
    expected = load_checkpoint(full.last_checkpoint)
    got = load_checkpoint(resumed.last_checkpoint)
    assert_same_rows(got["progress"]["history"], expected["progress"]["history"])
    assert got["scaler"] == expected["scaler"]
    for name, value in expected["train_state_dict"].items():
        assert torch.equal(got["train_state_dict"][name], value), name
