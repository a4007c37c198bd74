"""Several data files in one training set: a common species order, per-file weights and tags.

Each file is read into its own ``GraphDataset`` (and cached on its own); ``retype`` moves a
dataset onto the species order of the run, ``tag`` multiplies its loss weights by the file's
weight and records the file's index in every graph (``dataset_index``), and ``concatenate``
joins the tagged datasets. Graph dicts are shallow-copied, never mutated (they may be shared
with a cache).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from equiforce.data import keys
from equiforce.data.dataset import GraphDataset
from equiforce.data.graph import type_indices
from equiforce.data.statistics import species_names

__all__ = ["concatenate", "dataset_species", "retype", "tag"]

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


def tag(dataset: GraphDataset, index: int, weight: float) -> GraphDataset:
    """Graphs of one file with their loss weights scaled by ``weight`` and ``dataset_index``.

    Args:
        dataset: the file's graphs.
        index: the file's position in the run's list of training files.
        weight: multiplies ``energy_weight``, ``forces_weight`` and ``stress_weight``
            (> 0; 1.0 leaves them unchanged).

    Returns:
        A new dataset (graph dicts shallow-copied).
    """
    if not np.isfinite(weight) or weight <= 0.0:
        raise ValueError(f"a file weight must be finite and > 0, got {weight}")
    index_tensor = torch.tensor([int(index)], dtype=torch.long)
    graphs = []
    for graph in dataset.graphs:
        tagged = {**graph, keys.DATASET_INDEX: index_tensor}
        if weight != 1.0:
            tagged.update({name: graph[name] * weight for name in _WEIGHT_KEYS})
        graphs.append(tagged)
    return GraphDataset(graphs, dataset.type_names, dataset.r_max, dataset.sources)


def concatenate(datasets: Sequence[GraphDataset]) -> GraphDataset:
    """One dataset of all graphs, in order.

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
    graphs = [g for d in datasets for g in d.graphs]
    sources = [s for d in datasets for s in d.sources]
    return GraphDataset(graphs, first.type_names, first.r_max, sources)
