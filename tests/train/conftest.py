"""Fixtures for the training tests: tiny EMT-labelled Cu/Au data and a tiny MACE config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

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

TINY_ALLEGRO = {
    "family": "allegro",
    "r_max": 4.0,
    "l_max": 1,
    "num_layers": 1,
    "num_scalar_features": 8,
    "num_tensor_features": 4,
    "two_body_mlp_hidden": [8],
    "latent_mlp_hidden": [8],
    "readout_mlp_hidden": [8],
    "num_bessels": 4,
    "dtype": "float64",
}

TINY_MODELS = {"mace": TINY_MACE, "allegro": TINY_ALLEGRO}


@pytest.fixture(scope="session")
def emt_train_file(tmp_path_factory) -> Path:
    """12 rattled 4-atom Cu/Au fcc cells with EMT energies, forces and stresses."""
    path = tmp_path_factory.mktemp("data") / "train.xyz"
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1)) for seed in range(12)]
    write(path, frames, format="extxyz")
    return path


def config_dict(
    output_dir: Path, train_file: Path, model: dict[str, Any] | None = None, **training: Any
) -> dict[str, Any]:
    """A run dict over ``train_file``: 3 epochs, batch 3, EMA, final stage in epoch 3.

    ``model`` is a model section (default: the tiny MACE).
    """
    return {
        "output_dir": str(output_dir),
        "seed": 3,
        "data": {"train_file": str(train_file), "valid_fraction": 0.25, "batch_size": 3},
        "model": dict(TINY_MACE if model is None else model),
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


def make_config(
    output_dir: Path, train_file: Path, model: dict[str, Any] | None = None, **training: Any
) -> RunConfig:
    """``config_dict`` as a ``RunConfig``."""
    return RunConfig.from_dict(config_dict(output_dir, train_file, model, **training))


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory, emt_train_file) -> Callable[[str], TrainResult]:
    """Uninterrupted 3-epoch runs (2 main epochs + 1 final-stage epoch), one per family."""
    runs: dict[str, TrainResult] = {}

    def run(family: str) -> TrainResult:
        if family not in runs:
            folder = tmp_path_factory.mktemp(f"reference_{family}")
            runs[family] = train(make_config(folder, emt_train_file, TINY_MODELS[family]))
        return runs[family]

    return run


@pytest.fixture(scope="session")
def reference_run(reference_runs) -> TrainResult:
    """The uninterrupted tiny-MACE run."""
    return reference_runs("mace")


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    """Metrics rows equal in every column but the wall-clock time."""
    assert len(actual) == len(expected)

    def comparable(row: dict) -> dict:  # nan (e.g. no loss scale) equals nan here
        return {
            k: "nan" if isinstance(v, float) and math.isnan(v) else v
            for k, v in row.items()
            if k != "wall_s"
        }

    for got, want in zip(actual, expected, strict=True):
        assert comparable(got) == comparable(want)
