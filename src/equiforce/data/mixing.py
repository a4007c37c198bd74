"""Several data files in one training set: a common species order, per-file weights and tags.

Each file is read into its own ``GraphDataset`` (and cached on its own), or opened as an
``OnDiskDataset`` when it is a directory ``equiforce preprocess`` wrote; ``retype`` moves a
dataset onto the species order of the run, ``tag`` multiplies its loss weights by the file's
weight and records the file's index in every graph (``dataset_index``), and ``concatenate``
joins the tagged datasets: into one ``GraphDataset`` when all are in memory, else into a
``JoinedDataset`` that reads the on-disk parts lazily (the same graph dicts either way).
Graph dicts are shallow-copied, never mutated (they may be shared with a cache).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from equiforce.data import keys
from equiforce.data.dataset import GraphDataset
from equiforce.data.graph import type_indices
from equiforce.data.ondisk import OnDiskDataset
from equiforce.data.statistics import species_names
from equiforce.data.statistics_stream import StatisticsAccumulator

__all__ = ["JoinedDataset", "concatenate", "dataset_species", "retype", "tag"]

_WEIGHT_KEYS = (keys.ENERGY_WEIGHT, keys.FORCES_WEIGHT, keys.STRESS_WEIGHT)


def dataset_species(dataset: GraphDataset) -> tuple[str, ...]:
    """Chemical symbols present in ``dataset``, sorted by atomic number."""
    return species_names(g[keys.ATOMIC_NUMBERS].numpy() for g in dataset.graphs)


def retype(dataset: GraphDataset, type_names: Sequence[str]) -> GraphDataset:
    """``dataset`` with ``atom_type`` re-indexed into ``type_names``.

    Args:
        dataset: graphs built with any species order.
        type_names: the run's species; must contain every element of ``dataset``.

    Returns:
        ``dataset`` itself when the order is already ``type_names``, else a new dataset.

    Raises:
        ValueError: an element of a graph is not in ``type_names`` (names the graph's source).
    """
    type_names = tuple(type_names)
    if dataset.type_names == type_names:
        return dataset
    graphs = []
    for graph, source in zip(dataset.graphs, dataset.sources, strict=True):
        numbers = graph[keys.ATOMIC_NUMBERS].numpy()
        atom_type = torch.as_tensor(type_indices(numbers, type_names, source))
        graphs.append({**graph, keys.ATOM_TYPE: atom_type})
    return GraphDataset(graphs, type_names, dataset.r_max, dataset.sources)


def tag(dataset: GraphDataset | OnDiskDataset, index: int, weight: float):
    """Graphs of one file with their loss weights scaled by ``weight`` and ``dataset_index``.

    Args:
        dataset: the file's graphs (an ``OnDiskDataset`` is tagged as a view, applied when
            read).
        index: the file's position in the run's list of training files.
        weight: multiplies ``energy_weight``, ``forces_weight`` and ``stress_weight``
            (> 0; 1.0 leaves them unchanged).

    Returns:
        A new dataset (graph dicts shallow-copied).
    """
    if not np.isfinite(weight) or weight <= 0.0:
        raise ValueError(f"a file weight must be finite and > 0, got {weight}")
    if isinstance(dataset, OnDiskDataset):
        return dataset.tag(index, weight)
    index_tensor = torch.tensor([int(index)], dtype=torch.long)
    graphs = []
    for graph in dataset.graphs:
        tagged = {**graph, keys.DATASET_INDEX: index_tensor}
        if weight != 1.0:
            tagged.update({name: graph[name] * weight for name in _WEIGHT_KEYS})
        graphs.append(tagged)
    return GraphDataset(graphs, dataset.type_names, dataset.r_max, dataset.sources)


class JoinedDataset(Dataset):
    """In-memory and on-disk datasets joined in order (``concatenate`` of mixed parts).

    Args:
        parts: datasets of one species order and cutoff (``GraphDataset``/``OnDiskDataset``).

    ``dataset[k]`` is the graph of the part that holds item ``k``; on-disk parts stay on disk.
    """

    def __init__(self, parts: Sequence[GraphDataset | OnDiskDataset]):
        self.parts = list(parts)
        self.type_names = self.parts[0].type_names
        self.r_max = self.parts[0].r_max
        self._starts = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} graphs")
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.parts[part][index - int(self._starts[part])]

    def accumulate(self) -> StatisticsAccumulator:
        """Streaming statistics sums of all parts (``OnDiskDataset.accumulate``'s for the
        on-disk ones, the manifest's when a part is a whole directory)."""
        total = StatisticsAccumulator()
        for part in self.parts:
            if isinstance(part, OnDiskDataset):
                total.merge(part.accumulate())
                continue
            for graph in part.graphs:
                total.add(
                    graph[keys.ATOMIC_NUMBERS].numpy(),
                    int(graph[keys.EDGE_INDEX].shape[1]),
                    float(graph[keys.ENERGY]) if bool(graph[keys.HAS_ENERGY]) else None,
                    graph[keys.FORCES].numpy() if bool(graph[keys.HAS_FORCES]) else None,
                )
        return total


def concatenate(datasets: Sequence[GraphDataset | OnDiskDataset]):
    """One dataset of all graphs, in order: a ``GraphDataset`` when every part is one, else a
    ``JoinedDataset`` (on-disk parts are not loaded).

    Raises:
        ValueError: no dataset, or datasets with different species orders or cutoffs.
    """
    if not datasets:
        raise ValueError("concatenate needs at least one dataset")
    first = datasets[0]
    for other in datasets[1:]:
        if other.type_names != first.type_names or other.r_max != first.r_max:
            raise ValueError(
                f"cannot join datasets of species {list(other.type_names)} (r_max "
                f"{other.r_max}) and {list(first.type_names)} (r_max {first.r_max}); retype first"
            )
    if not all(isinstance(d, GraphDataset) for d in datasets):
        return JoinedDataset(datasets)
    graphs = [g for d in datasets for g in d.graphs]
    sources = [s for d in datasets for s in d.sources]
    return GraphDataset(graphs, first.type_names, first.r_max, sources)
