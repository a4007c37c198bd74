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


def _write_frames(path, au_fraction: float, symbol: str | None = None):
    frames = []
    for seed in range(8):
        atoms = make_fcc_cu(repeat=1, seed=seed, rattle=0.1, au_fraction=au_fraction)
        if symbol is not None:
            atoms.symbols[0] = symbol
        frames.append(emt_labelled(atoms))
    write(path, frames, format="extxyz")
    return path


def test_data_with_a_subset_of_the_species_fine_tunes(tmp_path, reference_run):
    cu_only = _write_frames(tmp_path / "cu.xyz", au_fraction=0.0)
    config = make_config(
        tmp_path / "cu",
        cu_only,
        init_model=str(reference_run.model_path),
        max_epochs=1,
        stage_two={"enabled": False},
    )
    tuned = load_model(train(config).model_path)
    assert tuned.type_names == load_model(reference_run.model_path).type_names == ["Cu", "Au"]


def test_a_species_the_init_model_lacks_is_named_with_its_file(tmp_path, reference_run):
    with_ag = _write_frames(tmp_path / "with_ag.xyz", au_fraction=0.5, symbol="Ag")
    config = make_config(tmp_path / "bad", with_ag, init_model=str(reference_run.model_path))
    with pytest.raises(ValueError, match=r"with_ag.xyz: species \['Ag'\] are not among the "):
        train(config)


def test_unreadable_file_names_the_setting(tmp_path, emt_train_file):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    config = make_config(tmp_path / "bad", emt_train_file, init_model=str(broken))
    with pytest.raises(ValueError, match=r"training.init_model .*broken.pt"):
        train(config)
