"""Fixtures for the training tests: tiny EMT-labelled Cu/Au data and a tiny MACE config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ase.io import write

from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.config import RunConfig
from equiforce.train.run import TrainResult, train

# A tiny MACE: 8 channels, invariant messages, one interaction (fast on 2 CPU cores).
TINY_MACE = {
    "family": "mace",
    "r_max": 4.0,
    "num_channels": 8,
    "max_L": 0,
    "max_ell": 2,
    "correlation": 2,
    "num_interactions": 1,
    "num_radial_basis": 4,
    "radial_mlp": [8],
    "dtype": "float64",
}


@pytest.fixture(scope="session")
def emt_train_file(tmp_path_factory) -> Path:
    """12 rattled 4-atom Cu/Au fcc cells with EMT energies, forces and stresses."""
    path = tmp_path_factory.mktemp("data") / "train.xyz"
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1)) for seed in range(12)]
    write(path, frames, format="extxyz")
    return path


def config_dict(output_dir: Path, train_file: Path, **training: Any) -> dict[str, Any]:
    """A run dict over ``train_file``: 3 epochs, batch 3, EMA, final stage in epoch 3."""
    return {
        "output_dir": str(output_dir),
        "seed": 3,
        "data": {"train_file": str(train_file), "valid_fraction": 0.25, "batch_size": 3},
        "model": dict(TINY_MACE),
        "training": {
            "max_epochs": 3,
            "lr": 0.01,
            "forces_weight": 10.0,
            "ema": {"enabled": True, "decay": 0.9},
            "stage_two": {"enabled": True, "start_epoch": 2, "lr": 0.002},
            "device": "cpu",
            "progress_bar": False,
            **training,
        },
    }


def make_config(output_dir: Path, train_file: Path, **training: Any) -> RunConfig:
    """``config_dict`` as a ``RunConfig``."""
    return RunConfig.from_dict(config_dict(output_dir, train_file, **training))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, emt_train_file) -> TrainResult:
    """An uninterrupted 3-epoch run (2 main epochs + 1 final-stage epoch)."""
    return train(make_config(tmp_path_factory.mktemp("reference"), emt_train_file))


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    """Metrics rows equal in every column but the wall-clock time."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert {k: v for k, v in got.items() if k != "wall_s"} == {
            k: v for k, v in want.items() if k != "wall_s"
        }
