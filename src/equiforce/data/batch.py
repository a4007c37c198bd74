"""Batching of graphs of different sizes into one ``dict[str, Tensor]``.

A single structure is a *graph*: a dict with per-node, per-edge and per-graph fields (see
``keys.FIELD_SCOPES``), with graph fields carrying a leading dimension of 1. ``collate``
concatenates graphs generically over the registry: node and edge fields along dim 0 (edge
indices offset by the running atom count), graph fields along dim 0, and it adds ``batch`` and
``ptr``. ``AtomicBatch`` is the typed view over such a dict.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch

from equiforce.data import keys
from equiforce.data.keys import FIELD_SCOPES, Scope

Graph = dict[str, torch.Tensor]


def collate(graphs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate single-structure graphs into one batch.

    Args:
        graphs: non-empty sequence of graph dicts, all with the same set of keys (graphs
            that are one-graph batches already, with ``batch`` and ``ptr``, get new ones).

    Returns:
        Batch dict with every field concatenated, ``edge_index`` offset per graph, plus
        ``batch`` (n_atoms,) int64 and ``ptr`` (n_graphs + 1,) int64.
    """
    if len(graphs) == 0:
        raise ValueError("collate needs at least one graph")
    names = set(graphs[0]) - {keys.BATCH, keys.PTR}
    for index, graph in enumerate(graphs):
        if set(graph) - {keys.BATCH, keys.PTR} != names:
            diff = sorted(names.symmetric_difference(set(graph) - {keys.BATCH, keys.PTR}))
            raise ValueError(f"graph {index} has different fields from graph 0: {diff}")
    n_atoms = torch.tensor([int(g[keys.POSITIONS].shape[0]) for g in graphs], dtype=torch.long)
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(n_atoms, 0)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        scope = FIELD_SCOPES.get(name)
        if scope is None:
            raise KeyError(f"field {name!r} has no scope in equiforce.data.keys.FIELD_SCOPES")
        if name == keys.EDGE_INDEX:
            out[name] = torch.cat([g[name] + ptr[k] for k, g in enumerate(graphs)], dim=1)
        else:
            out[name] = torch.cat([g[name] for g in graphs], dim=0)
    out[keys.BATCH] = torch.repeat_interleave(torch.arange(len(graphs)), n_atoms)
    out[keys.PTR] = ptr
    return out


def num_graphs(batch: Mapping[str, torch.Tensor]) -> int:
    """Number of graphs in a batch dict."""
    return int(batch[keys.PTR].shape[0]) - 1


def batch_to(batch: Mapping[str, torch.Tensor], device: torch.device | str) -> dict:
    """Move every tensor of a batch to ``device`` (dtypes unchanged)."""
    return {name: value.to(device) for name, value in batch.items()}


class AtomicBatch(Mapping[str, torch.Tensor]):
    """Typed, read-only view of a batch dict with accessors for the common fields."""

    def __init__(self, data: Mapping[str, torch.Tensor]):
        self._data = dict(data)

    @classmethod
    def from_graphs(cls, graphs: Sequence[Mapping[str, torch.Tensor]]) -> "AtomicBatch":
        """Collate graphs into a batch."""
        return cls(collate(graphs))

    @classmethod
    def from_dict(cls, data: Mapping[str, torch.Tensor]) -> "AtomicBatch":
        """Wrap an existing batch dict."""
        return cls(data)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Plain dict for the model boundary (a shallow copy)."""
        return dict(self._data)

    def to(self, device: torch.device | str) -> "AtomicBatch":
        """Copy to ``device``."""
        return AtomicBatch(batch_to(self._data, device))

    @property
    def n_graphs(self) -> int:
        """Number of graphs."""
        return num_graphs(self._data)

    @property
    def n_atoms(self) -> int:
        """Total number of atoms."""
        return int(self._data[keys.POSITIONS].shape[0])

    @property
    def n_edges(self) -> int:
        """Total number of edges."""
        return int(self._data[keys.EDGE_INDEX].shape[1])

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def scope_of(name: str) -> Scope:
    """Scope of a registered field; raises ``KeyError`` naming the field if unknown."""
    try:
        return FIELD_SCOPES[name]
    except KeyError:
        raise KeyError(f"unknown batch field {name!r}") from None
