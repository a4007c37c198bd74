"""Config type weights (``data.config_type_weights``, mace-torch's ``config_type_weights``):
each frame's weight times its config type's, through every reader (extxyz in memory, a
preprocessed directory, the training cache), and recorded where weights are stored."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from ase.io import write

from equiforce.cli import preprocess as preprocess_cli
from equiforce.data import keys
from equiforce.data.dataset import load_dataset
from equiforce.data.extxyz import KeySpec
from equiforce.data.ondisk import OnDiskDataset, preprocess
from equiforce.data.ondisk_cache import cached_preprocessed
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.config import RunConfig
from equiforce.train.datafiles import _read
from equiforce.train.setup import key_spec
from equiforce.typed_config import ConfigError

R_MAX = 4.0
TYPES = ["bulk", "surface", None, "bulk", "surface"]
WEIGHTS = {"bulk": 2.0, "surface": 0.0}


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    """Five Cu frames of types bulk, surface, none, bulk, surface; the fourth weighted 0.5."""
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1)) for seed in range(5)]
    for frame, kind in zip(frames, TYPES, strict=True):
        if kind is not None:
            frame.info["config_type"] = kind
    frames[3].info["config_weight"] = 0.5
    path = tmp_path_factory.mktemp("typed") / "typed.xyz"
    write(path, frames, format="extxyz")
    return path


def _expected_weights() -> np.ndarray:
    own = np.array([1.0, 1.0, 1.0, 0.5, 1.0])
    return own * np.array([WEIGHTS.get(kind, 1.0) for kind in TYPES])


def _data_section(path, **data):
    values = {
        "output_dir": "out",
        "data": {"train_file": str(path), "config_type_weights": WEIGHTS, **data},
        "model": {"family": "mace"},
    }
    return RunConfig.from_dict(values).data


def test_a_config_types_weight_multiplies_its_frames_weights_in_every_reader(typed_file, tmp_path):
    """In memory, from a preprocessed directory and from the training cache, each graph's
    energy, forces and stress weights are its ``config_weight`` times its type's weight
    (types not named: 1); the directory's manifest records the weights, a directory
    preprocessed without them is refused for a run that asks for them, and the cache keeps
    one directory per weighting."""
    data = _data_section(typed_file)
    spec = key_spec(data)
    assert spec.config_type_weights == (("bulk", 2.0), ("surface", 0.0))
    expected = _expected_weights()
    in_memory = load_dataset(typed_file, R_MAX, None, spec).graphs
    preprocess(typed_file, tmp_path / "pre", None, R_MAX, spec)
    on_disk = OnDiskDataset(tmp_path / "pre")
    assert on_disk.manifest["keys"]["config_type_weights"] == WEIGHTS
    for graphs in (in_memory, [on_disk[k] for k in range(len(on_disk))]):
        for name in (keys.ENERGY_WEIGHT, keys.FORCES_WEIGHT, keys.STRESS_WEIGHT):
            got = np.array([float(graph[name][0]) for graph in graphs])
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15, err_msg=name)
    assert isinstance(
        _read(str(tmp_path / "pre"), data, spec, R_MAX, reads_state=False), OnDiskDataset
    )

    preprocess(typed_file, tmp_path / "plain", None, R_MAX)
    assert "config_type_weights" not in OnDiskDataset(tmp_path / "plain").manifest["keys"]
    with pytest.raises(ValueError, match="plain: preprocessed with label keys"):
        _read(str(tmp_path / "plain"), data, spec, R_MAX, reads_state=False)
    weighted = cached_preprocessed(typed_file, tmp_path / "cache", R_MAX, spec)
    unweighted = cached_preprocessed(typed_file, tmp_path / "cache", R_MAX, KeySpec())
    assert weighted != unweighted
    cached = OnDiskDataset(weighted)
    got = np.array([float(cached[k][keys.ENERGY_WEIGHT][0]) for k in range(len(cached))])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_config_type_weights_are_checked_and_given_to_preprocess(typed_file, tmp_path):
    """A negative or non-numeric weight and a non-mapping are errors naming the key; the
    preprocess command takes ``--config-type-weights TYPE=W`` and refuses anything else."""
    with pytest.raises(ConfigError, match=r"data.config_type_weights.surface: must be >= 0"):
        _data_section(typed_file, config_type_weights={"surface": -1.0})
    with pytest.raises(ConfigError, match=r"data.config_type_weights.bulk: expected a number"):
        _data_section(typed_file, config_type_weights={"bulk": "heavy"})
    with pytest.raises(ConfigError, match="data.config_type_weights: expected a mapping"):
        _data_section(typed_file, config_type_weights=[1.0])
    parser = argparse.ArgumentParser()
    preprocess_cli.add_arguments(parser)
    argv = [str(typed_file), str(tmp_path / "cli"), "--r-max", str(R_MAX)]
    weights = ["--config-type-weights", "bulk=2", "surface=0"]
    assert preprocess_cli.run(parser.parse_args([*argv, *weights])) == 0
    assert OnDiskDataset(tmp_path / "cli").manifest["keys"]["config_type_weights"] == WEIGHTS
    argv[1] = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="--config-type-weights 'bulk': give TYPE=W"):
        preprocess_cli.run(parser.parse_args([*argv, "--config-type-weights", "bulk"]))
