"""Edges split into chunks of consecutive receivers, each a small graph of its own.

A message-passing layer evaluated chunk by chunk keeps only one chunk's per-edge tensors
(radial MLP activations, per-edge tensor-product weights) alive at a time; with activation
checkpointing (``equiforce.models.mace``) nothing per edge is stored between the forward and
the backward pass beyond the edge embeddings.

Chunk ``c`` owns the receivers ``[r_c, r_{c+1})`` (consecutive atom indices) and every edge
into them, and renumbers the nodes those edges touch ("local nodes": its receivers and
their senders, sorted by global index, so the receivers form one contiguous block of rows
starting at ``first_rows[c]``). A chunk's work and memory are proportional to its edges: no
tensor of the whole graph's size is made per chunk, so time and memory stay linear in the
number of edges. The local nodes of all chunks together are at most receivers + edges, and
far fewer when atom indices follow space (neighbouring atoms have nearby indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

__all__ = ["ReceiverChunks", "receiver_chunks"]


@dataclass(frozen=True)
class ReceiverChunks:
    """Chunks of an edge list (see module docstring); sizes are Python ints.

    Attributes:
        edge_order: (n_edges,) int64 permutation sorting the edges by receiver (stable), or
            None when ``edge_index[0]`` is already non-decreasing (as ``neighbor_list`` and
            ``collate`` make it). Edge tensors are permuted by it before ``edge_sizes``
            splits them.
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


def receiver_chunks(edge_index: torch.Tensor, n_atoms: int, max_edges: int) -> ReceiverChunks:
    """Split a graph's edges into chunks of about ``max_edges`` edges.

    Chunk boundaries fall between receivers, so a chunk may exceed ``max_edges`` by up to
    one receiver's edges (a receiver with more edges than ``max_edges`` is a chunk alone).

    Args:
        edge_index: (2, n_edges) int64 ``[receiver, sender]``.
        n_atoms: number of nodes.
        max_edges: target edges per chunk, >= 1.

    Returns:
        The chunks; one chunk holding everything when ``n_edges <= max_edges``.
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
    receiver_ranges = list(pairwise(bounds.tolist()))
    edge_ranges = list(pairwise(offsets[bounds].tolist()))
    node_lists, senders, receivers, first_rows = [], [], [], []
    for (r0, r1), (e0, e1) in zip(receiver_ranges, edge_ranges, strict=True):
        own = torch.arange(r0, r1, device=receiver.device)
        nodes, local = torch.unique(torch.cat([own, sender[e0:e1]]), return_inverse=True)
        first = int(local[0])  # bounds are strictly increasing: r1 > r0
        node_lists.append(nodes)
        senders.append(local[r1 - r0 :])
        receivers.append(receiver[e0:e1] - r0 + first)
        first_rows.append(first)
    return ReceiverChunks(
        edge_order=edge_order,
        edge_sizes=[e1 - e0 for e0, e1 in edge_ranges],
        receiver_sizes=[r1 - r0 for r0, r1 in receiver_ranges],
        node_sizes=[len(nodes) for nodes in node_lists],
        nodes=torch.cat(node_lists),
        senders=senders,
        receivers=receivers,
        first_rows=first_rows,
    )
