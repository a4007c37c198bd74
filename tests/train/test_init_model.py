"""``training.init_model``: a run starts from a model file's weights, checked against the config."""

from __future__ import annotations

import pytest
from ase.io import write

from equiforce.models import load_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.run import train

from .conftest import TINY_MACE, make_config


def _max_weight_difference(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[name] - sb[name]).abs().max()) for name in sa)


def test_run_starts_from_the_given_model(tmp_path, emt_train_file, reference_run):
    start = load_model(reference_run.model_path)
    # an lr so small that one epoch leaves the weights (and so their EMA) where they started
    tuned = train(
        make_config(
            tmp_path / "tuned",
            emt_train_file,
            init_model=str(reference_run.model_path),
            max_epochs=1,
            lr=1e-12,
            stage_two={"enabled": False},
        )
    )
    assert _max_weight_difference(load_model(tuned.model_path), start) < 1e-9
    fresh = train(
        make_config(
            tmp_path / "fresh", emt_train_file, max_epochs=1, lr=1e-12, stage_two={"enabled": False}
        )
    )
    assert _max_weight_difference(load_model(fresh.model_path), start) > 1e-3


def test_other_hyperparameters_are_named(tmp_path, emt_train_file, reference_run):
    config = make_config(
        tmp_path / "bad",
        emt_train_file,
        {**TINY_MACE, "num_channels": 4},
        init_model=str(reference_run.model_path),
    )
    with pytest.raises(ValueError, match=r"init_model .*num_channels: file 8, config 4"):
        train(config)


def test_other_species_are_an_error(tmp_path, reference_run):
    cu_only = tmp_path / "cu.xyz"
    frames = [
        emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1, au_fraction=0.0))
        for seed in range(8)
    ]
    write(cu_only, frames, format="extxyz")
    config = make_config(tmp_path / "bad", cu_only, init_model=str(reference_run.model_path))
    with pytest.raises(ValueError, match=r"species \['Cu', 'Au'\] are not the training set's"):
        train(config)


def test_unreadable_file_names_the_setting(tmp_path, emt_train_file):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    config = make_config(tmp_path / "bad", emt_train_file, init_model=str(broken))
    with pytest.raises(ValueError, match=r"training.init_model .*broken.pt"):
        train(config)
