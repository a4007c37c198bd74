"""The training and validation sets of a run from its training files (``data.train_files``).

Each file is read (through the cache) on its own, split or paired with its validation file,
checked against the species of ``training.init_model`` when fine-tuning, moved onto the run's
species order, tagged with its index and weight (``data.mixing``), and the files are joined.
Frames may carry partial labels (no forces, no stress, energy only); a frame with no label at
all, or a malformed label, is an error naming the file, the frame and the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from equiforce.data.dataset import GraphDataset, load_dataset, split_train_validation
from equiforce.data.extxyz import KeySpec
from equiforce.data.mixing import concatenate, dataset_species, retype, tag
from equiforce.data.statistics import species_names
from equiforce.train.config import DataConfig, TrainFileConfig

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSets:
    """Joined training and validation graphs and the files they came from.

    Attributes:
        train, valid: graphs of all files, in file order (``dataset_index`` set when
            ``groups`` is not empty).
        groups: file labels indexed by ``dataset_index``; empty for a single ``train_file``
            (no per-file metrics then).
    """

    train: GraphDataset
    valid: GraphDataset
    groups: tuple[str, ...]


def _read(path: str, data: DataConfig, keys: KeySpec, r_max: float) -> GraphDataset:
    """One file's graphs, partial labels allowed, in the file's own species order."""
    return load_dataset(
        path,
        r_max,
        None,
        keys,
        require_energy=False,
        require_forces=False,
        require_label=True,
        cache_dir=data.cache_dir,
    )


def _check_species(
    dataset: GraphDataset, where: str, allowed: Sequence[str] | None, model_path: str | None
) -> None:
    """Raise naming the file and the species the init model does not know."""
    if allowed is None:
        return
    unknown = [name for name in dataset_species(dataset) if name not in allowed]
    if unknown:
        raise ValueError(
            f"{where}: species {unknown} are not among the type_names {list(allowed)} of "
            f"training.init_model {model_path}; a fine-tuned model cannot learn new species"
        )


def load_file_sets(
    data: DataConfig,
    keys: KeySpec,
    r_max: float,
    seed: int,
    type_names: Sequence[str] | None = None,
    model_path: str | None = None,
) -> FileSets:
    """Read every training file and its validation data; join them.

    Args:
        data: the data section (``training_files()``, ``valid_fraction``, ``cache_dir``).
        keys: label key names.
        r_max: neighbour cutoff, Å.
        seed: split seed (the run seed).
        type_names: the species order to use (an init model's); None: the species of all
            training files, sorted by atomic number.
        model_path: the init model (error messages only).

    Returns:
        The joined sets.

    Raises:
        ValueError/DataError: a bad frame (file, frame, field named), or a species outside
            ``type_names`` (file and species named).
    """
    from ase.data import atomic_numbers

    entries: Sequence[TrainFileConfig] = data.training_files()
    pairs, present = [], set()
    for k, entry in enumerate(entries):
        where = f"data.train_files[{k}] {entry.path}" if data.train_files else entry.path
        train = _read(entry.path, data, keys, r_max)
        _check_species(train, where, type_names, model_path)
        present.update(dataset_species(train))
        if entry.valid_file is None:
            train, valid = split_train_validation(train, data.valid_fraction, seed)
        else:
            valid = _read(entry.valid_file, data, keys, r_max)
            where = f"{where} (valid_file {entry.valid_file})"
            _check_species(valid, where, type_names, model_path)
        pairs.append((train, valid))
    if type_names is None:  # the training files' (a species only in a valid_file errors)
        type_names = species_names([[atomic_numbers[name] for name in present]])
    single = data.train_files is None
    trains, valids = [], []
    for k, (train, valid) in enumerate(pairs):
        train, valid = retype(train, type_names), retype(valid, type_names)
        if not single:
            weight = entries[k].weight
            train, valid = tag(train, k, weight), tag(valid, k, weight)
            LOG.info(
                "training file %s (%s): %d train / %d valid frames, weight %g",
                entries[k].label,
                entries[k].path,
                len(train),
                len(valid),
                weight,
            )
        trains.append(train)
        valids.append(valid)
    groups = () if single else tuple(entry.label for entry in entries)
    return FileSets(concatenate(trains), concatenate(valids), groups)
