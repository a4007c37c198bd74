"""Preprocessed graph datasets in memory, train/validation splits and loaders.

A ``GraphDataset`` holds graph dicts built once by ``configuration_to_graph``; iterating it does
no ASE or neighbour-list work. Graphs preprocessed once into files and read lazily are
``equiforce.data.ondisk``'s (``data.cache_dir`` builds them on first use: ``ondisk_cache``).
``make_loader`` shuffles with an order that depends only on ``(seed, epoch)``, so training is
reproducible and resumable.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from equiforce.data.batch import collate
from equiforce.data.extxyz import DEFAULT_KEYS, KeySpec, read_configurations
from equiforce.data.graph import Configuration, configuration_to_graph
from equiforce.data.statistics import species_names

_HASH_CHUNK = 1 << 20

Graph = dict[str, torch.Tensor]
T = TypeVar("T")


class GraphDataset(Dataset):
    """Preprocessed graphs of one data set, all built with the same species and cutoff.

    Args:
        graphs: graph dicts from ``configuration_to_graph`` (not copied; do not mutate).
        type_names: species of ``atom_type``, in order.
        r_max: cutoff the edges were built with, Å.
        sources: per graph, where it came from (``"train.xyz, frame 3"``).
    """

    def __init__(
        self,
        graphs: Sequence[Graph],
        type_names: Sequence[str],
        r_max: float,
        sources: Sequence[str] | None = None,
    ):
        self.graphs = list(graphs)
        self.type_names = tuple(type_names)
        self.r_max = float(r_max)
        self.sources = list(sources) if sources is not None else ["<memory>"] * len(graphs)
        if len(self.sources) != len(self.graphs):
            raise ValueError(f"{len(self.sources)} sources for {len(self.graphs)} graphs")

    @classmethod
    def from_configurations(
        cls, configs: Sequence[Configuration], type_names: Sequence[str], r_max: float
    ) -> "GraphDataset":
        """Build every graph now (neighbour lists, type indices, label tensors).

        Args:
            configs: the structures.
            type_names: model species; an element outside it raises naming the config.
            r_max: neighbour cutoff, Å.

        Returns:
            The dataset.
        """
        graphs = [configuration_to_graph(c, type_names, r_max) for c in configs]
        return cls(graphs, type_names, r_max, [c.source for c in configs])

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> Graph:
        return self.graphs[index]

    def subset(self, indices: Sequence[int]) -> "GraphDataset":
        """A dataset of the graphs at ``indices`` (shared, not copied)."""
        picked = [int(i) for i in indices]
        return GraphDataset(
            [self.graphs[i] for i in picked],
            self.type_names,
            self.r_max,
            [self.sources[i] for i in picked],
        )

    @property
    def n_atoms(self) -> int:
        """Total number of atoms over all graphs."""
        return sum(int(g["pos"].shape[0]) for g in self.graphs)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_dataset(
    path: str | os.PathLike,
    r_max: float,
    type_names: Sequence[str] | None = None,
    keys: KeySpec = DEFAULT_KEYS,
    *,
    index: str | int | slice = ":",
    require_energy: bool = True,
    require_forces: bool = True,
    require_label: bool = False,
) -> GraphDataset:
    """Read an extxyz file into a ``GraphDataset``.

    Args:
        path: extxyz file.
        r_max: neighbour cutoff, Å.
        type_names: model species; None takes the file's species sorted by atomic number.
        keys: label key names.
        index: ASE frame selection.
        require_energy: every frame must have an energy (training/validation files).
        require_forces: every frame must have forces.
        require_label: every frame must have at least one of energy, forces and stress
            (training with partial labels).

    Returns:
        The dataset.
    """
    configs = read_configurations(
        path,
        keys,
        index,
        require_energy=require_energy,
        require_forces=require_forces,
        require_label=require_label,
    )
    if type_names is None:
        type_names = species_names(c.atomic_numbers for c in configs)
    return GraphDataset.from_configurations(configs, type_names, r_max)


def split_indices(n_items: int, valid_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic random split of ``range(n_items)`` into train and validation indices.

    Args:
        n_items: number of items.
        valid_fraction: fraction in (0, 1) for validation; rounded, at least one item each.
        seed: split seed (independent of any global RNG).

    Returns:
        ``(train_indices, valid_indices)``, each sorted ascending.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if n_items < 2:
        raise ValueError(f"need at least 2 items to split, got {n_items}")
    n_valid = min(max(1, int(round(valid_fraction * n_items))), n_items - 1)
    order = np.random.default_rng(seed).permutation(n_items)
    return sorted(order[n_valid:].tolist()), sorted(order[:n_valid].tolist())


def split_train_validation(items: Sequence[T], valid_fraction: float, seed: int) -> tuple[Any, Any]:
    """Split configurations or a ``GraphDataset`` deterministically.

    Args:
        items: configurations (or any sequence), or a ``GraphDataset``.
        valid_fraction: fraction in (0, 1) for validation.
        seed: split seed.

    Returns:
        ``(train, valid)``: two ``GraphDataset`` for a ``GraphDataset`` input, else two lists;
        items keep their original order.
    """
    train_index, valid_index = split_indices(len(items), valid_fraction, seed)
    if isinstance(items, GraphDataset):
        return items.subset(train_index), items.subset(valid_index)
    return [items[i] for i in train_index], [items[i] for i in valid_index]


def load_train_validation(
    train_path: str | os.PathLike,
    r_max: float,
    *,
    valid_path: str | os.PathLike | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    type_names: Sequence[str] | None = None,
    keys: KeySpec = DEFAULT_KEYS,
    require_energy: bool = True,
    require_forces: bool = True,
    require_label: bool = False,
) -> tuple[GraphDataset, GraphDataset]:
    """Training and validation datasets, from an explicit validation file or a split.

    Args:
        train_path: training extxyz file.
        r_max: neighbour cutoff, Å.
        valid_path: validation file; None splits ``valid_fraction`` off the training file.
        valid_fraction: validation fraction when splitting.
        seed: split seed.
        type_names: model species; None takes the training file's species.
        keys: label key names.
        require_energy: every frame of both files must have an energy.
        require_forces: every frame of both files must have forces.
        require_label: every frame of both files must have some label (partial labels).

    Returns:
        ``(train, valid)`` sharing ``type_names`` and ``r_max``.
    """
    options = {
        "require_energy": require_energy,
        "require_forces": require_forces,
        "require_label": require_label,
    }
    train = load_dataset(train_path, r_max, type_names, keys, **options)
    if valid_path is None:
        return split_train_validation(train, valid_fraction, seed)
    return train, load_dataset(valid_path, r_max, train.type_names, keys, **options)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed that depends only on ``(seed, epoch)``."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """Single-process loader of collated batches with a ``(seed, epoch)``-determined order.

    Build one loader per epoch: the permutation is drawn from a ``torch.Generator`` seeded by
    ``epoch_seed(seed, epoch)``, so resuming at epoch ``k`` reproduces epoch ``k``'s batches.

    Args:
        dataset: a ``GraphDataset`` (or any dataset of graph dicts).
        batch_size: graphs per batch.
        shuffle: shuffle the order (training); False keeps dataset order (evaluation).
        seed: run seed.
        epoch: epoch number.
        drop_last: drop a last, smaller batch.

    Returns:
        A ``DataLoader`` yielding batch dicts (see ``equiforce.data.batch.collate``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(len(dataset), generator=generator).tolist()
    else:
        order = list(range(len(dataset)))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        collate_fn=collate,
        num_workers=0,
        drop_last=drop_last,
    )
