"""From a run configuration to ready objects: datasets, statistics, the model, batch sources.

``prepare_data`` and ``build_model_from_config`` are what the quickstart and the benchmarks
reuse to get exactly the data and model that ``train`` would use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from equiforce.data.dataset import GraphDataset, make_loader
from equiforce.data.extxyz import KeySpec
from equiforce.data.mixing import JoinedDataset, dataset_species
from equiforce.data.ondisk import OnDiskDataset
from equiforce.data.statistics import (
    DatasetStatistics,
    compute_statistics,
    read_isolated_atom_energies,
)
from equiforce.models.io import load_model
from equiforce.models.potential import Potential
from equiforce.models.presets import with_dtype
from equiforce.models.registry import build_model
from equiforce.train.config import DATASET_DERIVED_FIELDS, DataConfig, ModelConfig, RunConfig
from equiforce.train.datafiles import load_file_sets
from equiforce.train.trainer import BatchSource


@dataclass(frozen=True)
class TrainingData:
    """Datasets of a run and the statistics of its training set.

    Attributes:
        train: training graphs (of all training files, weights applied); an
            ``OnDiskDataset`` when ``data.train_file`` is a preprocessed directory, a
            ``JoinedDataset`` when one of ``data.train_files`` is.
        valid: validation graphs (same ``type_names`` and ``r_max``).
        statistics: E0s, average neighbour count, force RMS, mean interaction energy of
            ``train``, each from the frames that carry the label it needs.
        groups: names of the training files for per-file metrics (``data.train_files``;
            empty for a single ``train_file``).
    """

    train: GraphDataset | OnDiskDataset | JoinedDataset
    valid: GraphDataset | OnDiskDataset | JoinedDataset
    statistics: DatasetStatistics
    groups: tuple[str, ...] = ()


def key_spec(data: DataConfig) -> KeySpec:
    """The extxyz label key names of a data section."""
    return KeySpec(
        energy_key=data.energy_key,
        forces_key=data.forces_key,
        stress_key=data.stress_key,
        virials_key=data.virials_key,
        weight_key=data.weight_key,
        config_type_key=data.config_type_key,
        config_type_weights=tuple(sorted((data.config_type_weights or {}).items())),
        total_charge_key=data.total_charge_key,
        total_spin_key=data.total_spin_key,
    )


def prepare_data(config: RunConfig) -> TrainingData:
    """Read (or load from the cache) the training and validation sets and their statistics.

    Species are those of the training files, sorted by atomic number, or, when fine-tuning
    (``training.init_model``), the init model's (the data's must be among them). E0s come
    from the isolated-atoms file when given, else from a least-squares fit on the training
    energies; when fine-tuning, the statistics cover the species present (the model keeps
    its own constants).

    Args:
        config: the run; uses ``data``, ``model.r_max`` (the init model's when fine-tuning:
            a model section of only its family leaves the spec's default there), ``seed``
            (validation split) and ``training.init_model``.

    Returns:
        The datasets, the training-set statistics and the per-file group names.

    Raises:
        ValueError: a bad frame or label (file, frame, field named), or a species that the
            init model does not know (file and species named).
    """
    data, keys = config.data, key_spec(config.data)
    init_model = config.training.init_model
    r_max, model_species = config.model.r_max, None
    reads_state = config.model.params.get("embedding_specs") is not None
    if init_model is not None:  # the file's cutoff, species and inputs (a section's must agree)
        init = _load_init_model(init_model)
        r_max, model_species = float(init.r_max), tuple(init.type_names)
        reads_state = bool(init.energy_model.graph_inputs)
    sets = load_file_sets(data, keys, r_max, config.seed, model_species, init_model, reads_state)
    isolated = None
    if data.isolated_atoms_file is not None:
        isolated = read_isolated_atom_energies(data.isolated_atoms_file, keys)
    if not isinstance(sets.train, GraphDataset):  # preprocessed directories: streamed
        sums = sets.train.accumulate()  # None below: the species present (fine-tuning)
        names = sets.train.type_names if init_model is None else None
        statistics = sums.statistics(names, isolated_atoms=isolated)
    else:
        present = None if init_model is None else dataset_species(sets.train)
        statistics = compute_statistics(sets.train, r_max, present, isolated_atoms=isolated)
    return TrainingData(sets.train, sets.valid, statistics, sets.groups)


def _load_init_model(path: str) -> Potential:
    try:
        return load_model(path)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"training.init_model {path}: {err}") from err


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

    The hyperparameters set in the model section must equal the file's; those left out are
    the file's (``model: {family: mace}`` fine-tunes any MACE file, e.g. a converted
    mace-torch foundation model). A ``dtype`` that differs converts the weights.

    Args:
        path: any file ``equiforce.models.load_model`` reads (model file or checkpoint).
        model: the run's model section (its family, and the hyperparameters it sets).
        statistics: training-set statistics (its species must be among the file's).
        seed: unused (kept for the call signature; ``seed`` only seeds initialisation).

    Returns:
        The loaded potential on the CPU, with its own E0s and scaling.

    Raises:
        ValueError: the file is unreadable, of another family, has other hyperparameters
            (every differing field is named), or lacks a species of the data.
    """
    where = f"training.init_model {path}"
    loaded = _load_init_model(path)
    if loaded.family != model.family:
        raise ValueError(
            f"{where}: a {loaded.family!r} model, but model.family is {model.family!r}"
        )
    wanted = dataclasses.asdict(model.spec())
    have = loaded.spec_dict()
    ignored = set(DATASET_DERIVED_FIELDS) | {"seed", "dtype"}
    differ = [
        f"{name}: file {have.get(name)!r}, config {wanted[name]!r}"
        for name in sorted(model.params)
        if name not in ignored and have.get(name) != wanted[name]
    ]
    if differ:
        raise ValueError(
            f"{where}: hyperparameters differ from the model section: {'; '.join(differ)}"
        )
    unknown = [name for name in statistics.type_names if name not in loaded.type_names]
    if unknown:
        raise ValueError(
            f"{where}: the training set's species {unknown} are not among the model's "
            f"{list(loaded.type_names)}"
        )
    dtype = model.params.get("dtype")
    return loaded if dtype is None else with_dtype(loaded, str(dtype))


def batch_sources(data: TrainingData, config: RunConfig) -> tuple[BatchSource, BatchSource]:
    """Training (shuffled by ``(seed, epoch)``) and validation (fixed order) batch sources.

    The validation source carries ``data.groups``: metrics per training file.
    """
    batch_size, valid_batch_size = config.data.batch_size, config.data.valid_batch_size

    def train_batches(epoch: int):
        return make_loader(data.train, batch_size, shuffle=True, seed=config.seed, epoch=epoch)

    def valid_batches(epoch: int):
        return make_loader(data.valid, valid_batch_size, shuffle=False)

    return (
        BatchSource(train_batches, -(-len(data.train) // batch_size)),
        BatchSource(valid_batches, -(-len(data.valid) // valid_batch_size), data.groups),
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
