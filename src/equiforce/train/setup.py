"""From a run configuration to ready objects: datasets, statistics, the model, batch sources.

``prepare_data`` and ``build_model_from_config`` are what the quickstart and the benchmarks
reuse to get exactly the data and model that ``train`` would use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from equiforce.data.dataset import GraphDataset, load_train_validation, make_loader
from equiforce.data.extxyz import KeySpec
from equiforce.data.statistics import (
    DatasetStatistics,
    compute_statistics,
    read_isolated_atom_energies,
)
from equiforce.models.io import load_model
from equiforce.models.potential import Potential
from equiforce.models.registry import build_model
from equiforce.train.config import DATASET_DERIVED_FIELDS, DataConfig, ModelConfig, RunConfig
from equiforce.train.trainer import BatchSource


@dataclass(frozen=True)
class TrainingData:
    """Datasets of a run and the statistics of its training set.

    Attributes:
        train: training graphs.
        valid: validation graphs (same ``type_names`` and ``r_max``).
        statistics: E0s, average neighbour count, force RMS, mean interaction energy of
            ``train``.
    """

    train: GraphDataset
    valid: GraphDataset
    statistics: DatasetStatistics


def key_spec(data: DataConfig) -> KeySpec:
    """The extxyz label key names of a data section."""
    return KeySpec(
        energy_key=data.energy_key,
        forces_key=data.forces_key,
        stress_key=data.stress_key,
        virials_key=data.virials_key,
        weight_key=data.weight_key,
    )


def prepare_data(config: RunConfig) -> TrainingData:
    """Read (or load from the cache) the training and validation sets and their statistics.

    Species are those of the training file, sorted by atomic number; E0s come from the
    isolated-atoms file when given, else from a least-squares fit on the training energies.

    Args:
        config: the run; uses ``data``, ``model.r_max`` and ``seed`` (validation split).

    Returns:
        The datasets and the training-set statistics.
    """
    data, keys = config.data, key_spec(config.data)
    r_max = config.model.r_max
    train, valid = load_train_validation(
        data.train_file,
        r_max,
        valid_path=data.valid_file,
        valid_fraction=data.valid_fraction,
        seed=config.seed,
        keys=keys,
        cache_dir=data.cache_dir,
    )
    isolated = None
    if data.isolated_atoms_file is not None:
        isolated = read_isolated_atom_energies(data.isolated_atoms_file, keys)
    statistics = compute_statistics(train, r_max, isolated_atoms=isolated)
    return TrainingData(train, valid, statistics)


def spec_from_statistics(model: ModelConfig, statistics: DatasetStatistics, seed: int) -> Any:
    """The model spec with the dataset-derived fields filled in.

    ``scale`` is the training force RMS and ``shift`` the mean interaction energy per atom
    (mace-torch's default scaling); ``seed`` is used unless ``model.seed`` is set.

    Args:
        model: family and hyperparameters.
        statistics: training-set statistics.
        seed: run seed.

    Returns:
        The family's frozen spec dataclass.
    """
    spec = model.spec()
    derived = {
        "type_names": tuple(statistics.type_names),
        "atomic_energies": tuple(float(e) for e in statistics.atomic_energies),
        "avg_num_neighbors": float(statistics.avg_num_neighbors),
        "scale": float(statistics.force_rms),
        "shift": float(statistics.mean_interaction_energy),
    }
    if "seed" not in model.params:
        derived["seed"] = int(seed)
    return dataclasses.replace(spec, **derived)


def build_model_from_config(
    model: ModelConfig, statistics: DatasetStatistics, seed: int
) -> Potential:
    """A freshly initialised ``Potential`` for a training set.

    Args:
        model: family and hyperparameters.
        statistics: training-set statistics (fill the dataset-derived spec fields).
        seed: run seed (model initialisation unless ``model.seed`` is set).

    Returns:
        The potential, in the spec's dtype, on the CPU.
    """
    spec = spec_from_statistics(model, statistics, seed)
    potential = build_model(model.family, spec)
    return potential.to(getattr(torch, spec.dtype))


def model_to_fine_tune(
    path: str, model: ModelConfig, statistics: DatasetStatistics, seed: int
) -> Potential:
    """The model of ``training.init_model``, checked against the run's model and data.

    Args:
        path: equiforce model file or training checkpoint.
        model: the run's model section (family and hyperparameters the file must have).
        statistics: training-set statistics (its species must be the file's).
        seed: run seed (the ``seed`` field is not compared: it only seeds initialisation).

    Returns:
        The loaded potential on the CPU, with its own E0s and scaling.

    Raises:
        ValueError: the file is unreadable, of another family, has other hyperparameters
            (every differing field is named) or other species.
    """
    where = f"training.init_model {path}"
    try:
        loaded = load_model(path)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err
    if loaded.family != model.family:
        raise ValueError(
            f"{where}: a {loaded.family!r} model, but model.family is {model.family!r}"
        )
    wanted = dataclasses.asdict(spec_from_statistics(model, statistics, seed))
    have = loaded.spec_dict()
    ignored = set(DATASET_DERIVED_FIELDS) | {"seed"}
    differ = [
        f"{name}: file {have.get(name)!r}, config {wanted[name]!r}"
        for name in sorted(wanted)
        if name not in ignored and have.get(name) != wanted[name]
    ]
    if differ:
        raise ValueError(
            f"{where}: hyperparameters differ from the model section: {'; '.join(differ)}"
        )
    if tuple(loaded.type_names) != tuple(statistics.type_names):
        raise ValueError(
            f"{where}: the model's species {list(loaded.type_names)} are not the training "
            f"set's {list(statistics.type_names)}"
        )
    return loaded


def batch_sources(data: TrainingData, config: RunConfig) -> tuple[BatchSource, BatchSource]:
    """Training (shuffled by ``(seed, epoch)``) and validation (fixed order) batch sources."""
    batch_size, valid_batch_size = config.data.batch_size, config.data.valid_batch_size

    def train_batches(epoch: int):
        return make_loader(data.train, batch_size, shuffle=True, seed=config.seed, epoch=epoch)

    def valid_batches(epoch: int):
        return make_loader(data.valid, valid_batch_size, shuffle=False)

    return (
        BatchSource(train_batches, -(-len(data.train) // batch_size)),
        BatchSource(valid_batches, -(-len(data.valid) // valid_batch_size)),
    )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names as given.

    Raises:
        ValueError: a CUDA device is requested but CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"training.device is {name!r} but CUDA is not available")
    return device
