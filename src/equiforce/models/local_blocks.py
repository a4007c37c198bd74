"""Cutting a batch into blocks of centre atoms for strictly local energy models (inference).

A *strictly local* energy model (``strictly_local`` in ``equiforce.models.contract``, e.g.
Allegro) gives atom i an energy that depends only on the edges centred at i: their vectors
and the types of both atoms. Its energy and derivatives for a large structure can then be
evaluated block by block: each block is a contiguous range of centre atoms, the edges
centred on them and a sub-graph holding those centres plus their neighbours (atom indices
relabelled). Every intermediate of the model is then sized by the block, not by the
structure, so the working set stays in cache and the peak memory stops growing with the
model's per-edge intermediates (``docs/performance.md``, "Scaling").

Contract of a strictly local model's outputs: a name starting with ``edge_`` is per edge
(first axis the block's edges), every other output is per atom (first axis the sub-graph's
atoms; only the rows of the block's centre atoms are kept). The sub-graph carries the node
fields gathered, the edge fields sliced and the graph fields whole; it has no ``ptr``.

``Potential`` (``equiforce.models.potential``) runs the blocks and turns each block's
``dE/d(edge_vec)`` into forces and virial.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equiforce.data import keys

__all__ = ["Block", "BlockPlan", "BlockSettings", "SavedBytes"]

EDGE_OUTPUT_PREFIX = "edge_"


@dataclass(frozen=True)
class BlockSettings:
    """When and how finely a strictly local model's inference is cut into blocks.

    The best block is large enough that the per-op Python/dispatch overhead (~2 ms per block
    for a small Allegro) is negligible and small enough that its intermediates stay near the
    caches; measured on this CPU (``docs/performance.md``, "Scaling") the optimum holds about
    the same *bytes* for small and large models (2^15-2^16 edges for a 32/8-feature Allegro at
    ~2.4 KB of autograd-saved tensors per edge, ~4,000 edges for a 128/64-feature l_max 2
    Allegro at ~47 KB per edge), so blocks are sized in bytes: the first block of every call
    (``probe_edges``) measures the model's saved bytes per edge.

    Attributes:
        block_bytes: target autograd-saved intermediates per block, bytes (default 64 MiB).
        probe_edges: edges of the first, measuring block (default 2048).
        min_edges: batches with at most this many edges run whole (default 2^14).
        no_grad_edges: edges per block when nothing is saved (energies under
            ``torch.no_grad``), default 2^15.
    """

    block_bytes: int = 2**26
    probe_edges: int = 2048
    min_edges: int = 2**14
    no_grad_edges: int = 2**15

    def edges_per_block(self, saved_bytes_per_edge: float) -> int:
        """Edges per block for a model saving ``saved_bytes_per_edge`` bytes per edge."""
        if saved_bytes_per_edge <= 0:
            return self.no_grad_edges
        return max(1, int(self.block_bytes / saved_bytes_per_edge))


class SavedBytes:
    """Context manager: bytes of the distinct storages autograd saves inside it."""

    def __init__(self) -> None:
        self.nbytes = 0
        self._seen: set[int] = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.nbytes += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


@dataclass(frozen=True)
class Block:
    """One block: a sub-graph and where its pieces sit in the whole batch.

    Attributes:
        inputs: the sub-graph's batch dict (edge_index relabelled to the sub-graph's atoms);
            the caller adds ``edge_vec``.
        edge_index: (2, n_block_edges) int64, the block's edges in the whole batch's atom
            indices ``[centre, neighbour]``.
        edge_shift: (n_block_edges, 3) float64 lattice shifts of the block's edges.
        centres: (n_centres,) int64 rows of the block's centre atoms in the sub-graph, in
            the order of their global indices.
    """

    inputs: dict[str, torch.Tensor]
    edge_index: torch.Tensor
    edge_shift: torch.Tensor
    centres: torch.Tensor

    def keep_centres(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's outputs with per-atom ones reduced to the block's centre atoms."""
        n_sub = self.inputs[keys.ATOM_TYPE].shape[0]
        n_edges = self.edge_index.shape[1]
        kept = {}
        for name, value in outputs.items():
            per_edge = name.startswith(EDGE_OUTPUT_PREFIX)
            expected = n_edges if per_edge else n_sub
            if value.shape[0] != expected:
                scope = "edge" if per_edge else "atom"
                raise ValueError(
                    f"strictly local model output {name!r} has {value.shape[0]} rows, "
                    f"expected {expected} (per {scope})"
                )
            kept[name] = value if per_edge else value.index_select(0, self.centres)
        return kept


class BlockPlan:
    """A batch's edges in centre order, cut into blocks of consecutive centre atoms.

    Edges are taken in centre order (a stable sort when the batch is not sorted by centre
    already; ``equiforce.data.neighbors`` sorts them), so every block's edges are one
    contiguous range, and an atom's edges never straddle two blocks.

    Args:
        inputs: the whole batch dict (model input keys); ``edge_index`` (2, n_edges) int64
            ``[centre, neighbour]``, ``edge_shift`` (n_edges, 3).
    """

    def __init__(self, inputs: dict[str, torch.Tensor]):
        self.inputs = inputs
        edge_index = inputs[keys.EDGE_INDEX]
        n_atoms, n_edges = inputs[keys.ATOM_TYPE].shape[0], edge_index.shape[1]
        centre = edge_index[0]
        sorted_already = n_edges < 2 or bool((centre[1:] >= centre[:-1]).all())
        self.order = None if sorted_already else torch.argsort(centre, stable=True)
        self.edge_shift = inputs[keys.EDGE_SHIFT]
        if self.order is not None:
            edge_index = edge_index.index_select(1, self.order)
            self.edge_shift = self.edge_shift.index_select(0, self.order)
        self.edge_index = edge_index
        edge_ptr = torch.zeros(n_atoms + 1, dtype=torch.int64, device=centre.device)
        edge_ptr[1:] = torch.cumsum(torch.bincount(edge_index[0], minlength=n_atoms), 0)
        self._edge_ptr_tensor = edge_ptr
        self.edge_ptr = edge_ptr.tolist()
        self.n_atoms = n_atoms

    def ranges(self, start: int, block_edges: int) -> list[tuple[int, int]]:
        """Atom ranges covering atoms ``start..n_atoms`` with their edges split evenly.

        Each range has at most about ``block_edges`` (>= 1) edges (more only where a single
        atom has more).
        """
        if start >= self.n_atoms:
            return []
        first, n_edges = self.edge_ptr[start], self.edge_ptr[-1] - self.edge_ptr[start]
        n_blocks = max(1, -(-n_edges // max(1, block_edges)))
        steps = torch.arange(1, n_blocks, device=self._edge_ptr_tensor.device)
        cuts = torch.searchsorted(self._edge_ptr_tensor, first + steps * n_edges // n_blocks)
        bounds = sorted({start, self.n_atoms, *cuts.tolist()})
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def n_edges(self, start: int, stop: int) -> int:
        """Edges centred on atoms ``start..stop``."""
        return self.edge_ptr[stop] - self.edge_ptr[start]

    def block(self, start: int, stop: int) -> Block:
        """The sub-graph of centre atoms ``start..stop`` and their edges."""
        first, last = self.edge_ptr[start], self.edge_ptr[stop]
        block_index = self.edge_index[:, first:last]
        centre_ids = torch.arange(start, stop, device=block_index.device)
        atoms, local = torch.unique(torch.cat([centre_ids, block_index[1]]), return_inverse=True)
        n_centres = stop - start
        sub = {}
        for name, value in self.inputs.items():
            scope = keys.FIELD_SCOPES.get(name)
            if scope is keys.Scope.NODE:
                sub[name] = value.index_select(0, atoms)
            elif scope is keys.Scope.GRAPH:
                sub[name] = value
        block_shift = self.edge_shift[first:last]
        sub[keys.EDGE_SHIFT] = block_shift
        centres = local[:n_centres]
        sub[keys.EDGE_INDEX] = torch.stack(
            [centres.index_select(0, block_index[0] - start), local[n_centres:]]
        )
        return Block(sub, block_index, block_shift, centres)

    def merge(self, pieces: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Concatenate the blocks' kept outputs.

        Per-atom outputs come back in atom order, per-edge ones in the batch's original
        edge order. Each output's pieces are dropped from ``pieces`` once concatenated, so
        the merge holds at most one output twice (10^6 atoms: the (n_atoms, 64) float32
        ``node_features`` of the tiny Allegro are 256 MB).
        """
        merged = {}
        for name in list(pieces[0]):
            value = torch.cat([piece.pop(name) for piece in pieces])
            if name.startswith(EDGE_OUTPUT_PREFIX) and self.order is not None:
                value = torch.empty_like(value).index_copy(0, self.order, value)
            merged[name] = value
        return merged
