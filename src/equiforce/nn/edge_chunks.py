"""Edges split into chunks of consecutive receivers, each a small graph of its own.

A message-passing layer evaluated chunk by chunk keeps only one chunk's per-edge tensors
(radial MLP activations, per-edge tensor-product weights) alive at a time; recomputed in the
backward pass (``equiforce.nn.mace.recompute``), nothing per edge is stored between the
forward and the backward pass but the edge vectors.

Chunk ``c`` owns the receivers ``[r_c, r_{c+1})`` (consecutive atom indices) and every edge
into them, and renumbers the nodes those edges touch ("local nodes": its receivers and
their senders, sorted by global index, so the receivers form one contiguous block of rows
starting at ``first_row``). A chunk's work and memory are proportional to its edges: no
tensor of the whole graph's size is made per chunk, so time and memory stay linear in the
number of edges. The local nodes of all chunks together are at most receivers + edges, and
far fewer when atom indices follow space (neighbouring atoms have nearby indices).

Two forms: ``ChunkBounds`` keeps only the receiver-sorted edge list and the chunk boundaries
and makes a chunk's local graph on demand (``ChunkBounds.local``, O(chunk edges)); the
precomputed ``ReceiverChunks`` holds every chunk's local indices at once (16 bytes per edge
more), for a pass that gathers all chunks' nodes in one go.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import torch

__all__ = ["ChunkBounds", "LocalGraph", "ReceiverChunks", "chunk_bounds", "receiver_chunks"]


class LocalGraph(NamedTuple):
    """One chunk as a graph of its own.

    Attributes:
        nodes: (n_local,) int64 global index of each local node, increasing.
        senders: (n_chunk_edges,) int64 local row of each edge's sender.
        receivers: (n_chunk_edges,) int64 local row of each edge's receiver.
        first_row: local row of the chunk's first receiver.
        atoms: the chunk's receivers, global indices ``atoms[0] .. atoms[1] - 1``.
        edges: its edges, positions ``edges[0] .. edges[1] - 1`` of the receiver-sorted list.
    """

    nodes: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    first_row: int
    atoms: tuple[int, int]
    edges: tuple[int, int]


@dataclass(frozen=True)
class ChunkBounds:
    """Chunk boundaries of a receiver-sorted edge list (see module docstring).

    Attributes:
        edge_order: (n_edges,) int64 permutation sorting the edges by receiver (stable), or
            None when ``edge_index[0]`` is already non-decreasing (as ``neighbor_list`` and
            ``collate`` make it). Edge tensors are permuted by it before chunks slice them.
        receiver: (n_edges,) int64 receivers in sorted order (a view when already sorted).
        sender: (n_edges,) int64 senders in the same order.
        atom_bounds: n_chunks + 1 increasing atom indices from 0 to the number of receivers
            covered; chunk c owns ``atom_bounds[c] .. atom_bounds[c + 1] - 1``.
        edge_bounds: n_chunks + 1 positions in the sorted edge list, from 0 to n_edges.
    """

    edge_order: torch.Tensor | None
    receiver: torch.Tensor
    sender: torch.Tensor
    atom_bounds: list[int]
    edge_bounds: list[int]

    def __len__(self) -> int:
        return len(self.atom_bounds) - 1

    def local(self, c: int) -> LocalGraph:
        """Chunk ``c``'s local graph (an ``torch.unique`` over its edges' senders)."""
        r0, r1 = self.atom_bounds[c], self.atom_bounds[c + 1]
        e0, e1 = self.edge_bounds[c], self.edge_bounds[c + 1]
        own = torch.arange(r0, r1, device=self.receiver.device)
        nodes, local = torch.unique(torch.cat([own, self.sender[e0:e1]]), return_inverse=True)
        first = int(local[0]) if r1 > r0 else 0
        receivers = self.receiver[e0:e1] - r0 + first
        return LocalGraph(nodes, local[r1 - r0 :], receivers, first, (r0, r1), (e0, e1))


def chunk_bounds(edge_index: torch.Tensor, n_atoms: int, max_edges: int) -> ChunkBounds:
    """Split a graph's edges into chunks of about ``max_edges`` edges.

    Chunk boundaries fall between receivers, so a chunk may exceed ``max_edges`` by up to
    one receiver's edges (a receiver with more edges than ``max_edges`` is a chunk alone).

    Args:
        edge_index: (2, n_edges) int64 ``[receiver, sender]``, receivers below ``n_atoms``.
        n_atoms: number of receivers to cover (rows ``0 .. n_atoms - 1``).
        max_edges: target edges per chunk, >= 1.

    Returns:
        The bounds; one chunk holding everything when ``n_edges <= max_edges``.
    """
    if max_edges < 1:
        raise ValueError(f"max_edges must be >= 1, got {max_edges}")
    receiver, sender = edge_index[0], edge_index[1]
    edge_order = None
    if receiver.numel() > 1 and bool((receiver[1:] < receiver[:-1]).any()):
        edge_order = torch.argsort(receiver, stable=True)
        receiver, sender = receiver[edge_order], sender[edge_order]
    offsets = torch.zeros(n_atoms + 1, dtype=torch.long, device=receiver.device)
    torch.cumsum(torch.bincount(receiver, minlength=n_atoms), 0, out=offsets[1:])
    targets = torch.arange(max_edges, receiver.numel(), max_edges, device=receiver.device)
    inner = torch.searchsorted(offsets, targets, right=True) - 1
    bounds = torch.cat([inner.new_tensor([0]), inner, inner.new_tensor([n_atoms])])
    bounds = torch.unique(bounds)
    return ChunkBounds(
        edge_order=edge_order,
        receiver=receiver,
        sender=sender,
        atom_bounds=bounds.tolist(),
        edge_bounds=offsets[bounds].tolist(),
    )


@dataclass(frozen=True)
class ReceiverChunks:
    """Every chunk's local graph at once (see module docstring); sizes are Python ints.

    Attributes:
        edge_order: as ``ChunkBounds.edge_order``.
        edge_sizes: edges per chunk.
        receiver_sizes: receivers per chunk; the chunks cover ``0 .. n_atoms - 1`` in order.
        node_sizes: local nodes per chunk.
        nodes: (sum(node_sizes),) int64 global index of each chunk's local nodes, chunk
            after chunk.
        senders: per chunk, (edge_sizes[c],) int64 local row of each edge's sender.
        receivers: per chunk, (edge_sizes[c],) int64 local row of each edge's receiver.
        first_rows: per chunk, local row of its first receiver.
    """

    edge_order: torch.Tensor | None
    edge_sizes: list[int]
    receiver_sizes: list[int]
    node_sizes: list[int]
    nodes: torch.Tensor
    senders: list[torch.Tensor]
    receivers: list[torch.Tensor]
    first_rows: list[int]

    def __len__(self) -> int:
        return len(self.edge_sizes)

    @classmethod
    def from_bounds(cls, bounds: ChunkBounds) -> ReceiverChunks:
        """Every chunk's ``bounds.local`` graph, made once."""
        graphs = [bounds.local(c) for c in range(len(bounds))]
        return cls(
            edge_order=bounds.edge_order,
            edge_sizes=[e1 - e0 for e0, e1 in pairwise(bounds.edge_bounds)],
            receiver_sizes=[r1 - r0 for r0, r1 in pairwise(bounds.atom_bounds)],
            node_sizes=[len(g.nodes) for g in graphs],
            nodes=torch.cat([g.nodes for g in graphs]),
            senders=[g.senders for g in graphs],
            receivers=[g.receivers for g in graphs],
            first_rows=[g.first_row for g in graphs],
        )


def receiver_chunks(edge_index: torch.Tensor, n_atoms: int, max_edges: int) -> ReceiverChunks:
    """``chunk_bounds`` with every chunk's local graph made (arguments as there)."""
    return ReceiverChunks.from_bounds(chunk_bounds(edge_index, n_atoms, max_edges))
