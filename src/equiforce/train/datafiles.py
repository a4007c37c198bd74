"""The training and validation sets of a run from its training files (``data.train_files``).

Each file is read on its own, split or paired with its validation file,
checked against the species of ``training.init_model`` when fine-tuning, moved onto the run's
species order, tagged with its index and weight (``data.mixing``), and the files are joined.
Frames may carry partial labels (no forces, no stress, energy only); a frame with no label at
all, or a malformed label, is an error naming the file, the frame and the field. Any training
or validation file (``data.train_file``, an entry of ``data.train_files``, their
``valid_file``) may name a directory written by ``equiforce preprocess`` (``data.ondisk``): it
is read lazily from disk, never loaded whole, split and tagged as views (``JoinedDataset``
joins it with the other files). With ``data.cache_dir`` every extxyz file is preprocessed into
such a directory on first use (``equiforce.data.ondisk_cache``) and read from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from equiforce.data.dataset import (
    GraphDataset,
    load_dataset,
    split_indices,
    split_train_validation,
)
from equiforce.data.extxyz import KeySpec
from equiforce.data.mixing import JoinedDataset, concatenate, dataset_species, retype, tag
from equiforce.data.ondisk import OnDiskDataset, check_label_keys, is_preprocessed
from equiforce.data.ondisk_cache import cached_preprocessed
from equiforce.data.statistics import species_names
from equiforce.train.config import DataConfig, TrainFileConfig

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSets:
    """Joined training and validation graphs and the files they came from.

    Attributes:
        train, valid: graphs of all files, in file order (``dataset_index`` set when
            ``groups`` is not empty); a ``JoinedDataset`` when a file is a preprocessed
            directory among several.
        groups: file labels indexed by ``dataset_index``; empty for a single ``train_file``
            (no per-file metrics then).
    """

    train: GraphDataset | OnDiskDataset | JoinedDataset
    valid: GraphDataset | OnDiskDataset | JoinedDataset
    groups: tuple[str, ...]


def _read(
    path: str, data: DataConfig, keys: KeySpec, r_max: float, reads_state: bool
) -> GraphDataset | OnDiskDataset:
    """One file's graphs, partial labels allowed, in the file's own species order.

    A preprocessed directory is opened lazily; its cutoff must be ``r_max`` and its label
    keys ``keys`` (``check_label_keys``: ``reads_state`` refuses one without states;
    directory named). With ``data.cache_dir`` an extxyz file is preprocessed there on first
    use and opened so.
    """
    if data.cache_dir is not None and not is_preprocessed(path):
        path = cached_preprocessed(path, data.cache_dir, r_max, keys)
    if is_preprocessed(path):
        dataset = OnDiskDataset(path)
        if dataset.r_max != float(r_max):
            raise ValueError(
                f"{path}: preprocessed with r_max {dataset.r_max} Å but model.r_max is {r_max}; "
                "run equiforce preprocess again with --r-max"
            )
        check_label_keys(dataset, keys, reads_state, "preprocess again with its keys")
        return dataset
    return load_dataset(
        path,
        r_max,
        None,
        keys,
        require_energy=False,
        require_forces=False,
        require_label=True,
    )


def _species(dataset: GraphDataset | OnDiskDataset) -> tuple[str, ...]:
    """Species present, sorted by atomic number (an on-disk dataset's from its manifest)."""
    if isinstance(dataset, OnDiskDataset):
        return dataset.species
    return dataset_species(dataset)


def _split(dataset: GraphDataset | OnDiskDataset, fraction: float, seed: int) -> tuple:
    """Train/validation split; an on-disk dataset is split into views (nothing read)."""
    if isinstance(dataset, OnDiskDataset):
        train_index, valid_index = split_indices(len(dataset), fraction, seed)
        return dataset.subset(train_index), dataset.subset(valid_index)
    return split_train_validation(dataset, fraction, seed)


def _retype(dataset: GraphDataset | OnDiskDataset, type_names: Sequence[str]):
    if isinstance(dataset, OnDiskDataset):
        return dataset.retype(type_names)
    return retype(dataset, type_names)


def _check_species(
    dataset: GraphDataset | OnDiskDataset,
    where: str,
    allowed: Sequence[str] | None,
    model_path: str | None,
) -> None:
    """Raise naming the file and the species the init model does not know."""
    if allowed is None:
        return
    unknown = [name for name in _species(dataset) if name not in allowed]
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
    reads_state: bool = False,
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
        reads_state: the model conditions on each frame's charge and spin (a preprocessed
            directory without them is refused).

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
        train = _read(entry.path, data, keys, r_max, reads_state)
        _check_species(train, where, type_names, model_path)
        present.update(_species(train))
        if entry.valid_file is None:
            train, valid = _split(train, data.valid_fraction, seed)
        else:
            valid = _read(entry.valid_file, data, keys, r_max, reads_state)
            where = f"{where} (valid_file {entry.valid_file})"
            _check_species(valid, where, type_names, model_path)
        pairs.append((train, valid))
    if type_names is None:  # the training files' (a species only in a valid_file errors)
        type_names = species_names([[atomic_numbers[name] for name in present]])
    single = data.train_files is None
    trains, valids = [], []
    for k, (train, valid) in enumerate(pairs):
        train, valid = _retype(train, type_names), _retype(valid, type_names)
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
    if single:  # nothing to join (an on-disk dataset stays on disk)
        return FileSets(trains[0], valids[0], ())
    return FileSets(concatenate(trains), concatenate(valids), tuple(e.label for e in entries))
