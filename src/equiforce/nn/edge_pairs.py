"""The two directions of each bond: one radial evaluation per pair of edges.

A full neighbour list holds every bond twice, ``(i, j, S)`` and ``(j, i, -S)`` (centre,
neighbour, lattice shift). Their vectors are opposite, so anything that depends on the length
alone, like MACE's radial MLP, has the same value on both: computing it once per pair and
giving it to both edges halves that work (the largest matrix products of a MACE layer, and
their derivatives in the force and the training backward), exactly. The edge convolution
reads each pair's row in place for both edges (``weight_row`` of the channel-wise TP
executors), so no (n_edges x weights) copy is made, nor summed back in the backward.

``edge_pairs`` finds the pairs from the integer edge list; an edge whose reverse is absent
(a half list, a LAMMPS domain's edges into ghost atoms) is a pair of its own, so the result
is right for any list. When pairing would save little in eager code (fewer than a quarter of
the edges merged, or fewer than 16 edges, where the per-operation overhead hides the saved
rows), and under symbolic tracing or compilation (the pairs depend on the data), it returns
None and the caller evaluates per edge. ``bond_pairs`` always pairs: an exported MACE package
takes the pairs as two inputs (``PAIR_INPUTS``: ``EdgePairs.first``, ``EdgePairs.of_edge``;
their count is a dynamic axis of the program) and its loader finds them with it
(``pair_inputs``), so a package runs its radial MLPs once per bond at any size.

Pairing ties the two edges of a bond together: the energy is then a different function of
*independent* edge vectors (the same on the physical ones, where reverse edges are
opposite), so ``dE/d(edge_vec)`` per edge changes. ``Potential`` gives pairs to its energy
model only when no per-edge gradients are asked for (``equiforce.models.contract``,
``EDGE_PAIRS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from equiforce.data import keys

__all__ = [
    "PAIR_FIRST",
    "PAIR_INPUTS",
    "PAIR_OF_EDGE",
    "EdgePairs",
    "bond_pairs",
    "edge_pairs",
    "pair_inputs",
]

# Batch keys of the pairs where a program takes them as inputs (an exported package): the
# (n_pairs,) ``EdgePairs.first`` and the (n_edges,) ``EdgePairs.of_edge``, int64.
PAIR_FIRST = "edge_pair_first"
PAIR_OF_EDGE = "edge_pair_of"
PAIR_INPUTS = (PAIR_FIRST, PAIR_OF_EDGE)

# Use pairs only when they are at most this fraction of the edges, and on graphs of at
# least _MIN_EDGES edges: below either the saved rows do not pay for finding the pairs.
# mace-128-l1 inference, one thread, pairing on / off with the pairs found in C++
# (``bond_pairs``, ~9 µs for 182 edges; it was ~90 µs in torch ops, and the floor 256 edges):
# water (6 edges) 1.00, ethanol (72) 0.97, AcAc (182) 0.92 float32 and 0.90 float64.
_MAX_PAIR_FRACTION = 0.75
_MIN_EDGES = 16
# Keys are int64: n_atoms^2 * (2 * max|shift| + 1)^3 must stay below this.
_MAX_KEY = 2**62


class EdgePairs(NamedTuple):
    """Edges grouped into bonds.

    Attributes:
        first: (n_pairs,) int64, the lowest edge index of each pair (its representative).
        of_edge: (n_edges,) int64, the pair each edge belongs to.
    """

    first: torch.Tensor
    of_edge: torch.Tensor

    def gather(self, edge_values: torch.Tensor) -> torch.Tensor:
        """(n_edges, ...) -> (n_pairs, ...): each pair's representative's row."""
        return edge_values.index_select(0, self.first)


def edge_pairs(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> EdgePairs | None:
    """Pair every edge ``(i, j, S)`` with its reverse ``(j, i, -S)`` (the kernel library's
    ``bond_pairs`` once this process has loaded the library, ``_library_operator``).

    Args:
        edge_index: (2, n_edges) int64, ``[centre, neighbour]``.
        edge_shift: (n_edges, 3) integer-valued lattice shifts of the neighbour (any dtype).

    Returns:
        The pairs, or None when the graph has fewer than ``_MIN_EDGES`` edges, the pairs are
        more than ``_MAX_PAIR_FRACTION`` of the edges, the pair keys would not fit in int64,
        or the call is traced or compiled (then evaluate per edge).
    """
    n_edges = edge_index.shape[1]
    if not isinstance(n_edges, int) or torch.compiler.is_compiling() or n_edges < _MIN_EDGES:
        return None
    # the library runs CPU tensors only: on a GPU it is neither built nor looked up
    operator = _library_operator() if edge_index.device.type == "cpu" else None
    pairs = _find_pairs(edge_index, edge_shift, operator)
    if pairs is None or pairs.first.shape[0] > _MAX_PAIR_FRACTION * n_edges:
        return None
    return pairs


def bond_pairs(
    edge_index: torch.Tensor, edge_shift: torch.Tensor, operator: Callable | None = None
) -> EdgePairs:
    """``edge_pairs`` at any size and pairing fraction (an eager call, at least one edge);
    where the pair keys would not fit in int64, each edge is a pair of its own.

    Args:
        edge_index, edge_shift: as ``edge_pairs``.
        operator: a ``bond_pairs`` operator of a kernel library (``_find_pairs``), or None
            for the torch formulation.
    """
    pairs = _find_pairs(edge_index, edge_shift, operator)
    if pairs is None:
        edges = torch.arange(edge_index.shape[1], device=edge_index.device)
        return EdgePairs(edges, edges)
    return pairs


def pair_inputs(
    batch: dict[str, torch.Tensor], operator: Callable | None = None
) -> dict[str, torch.Tensor]:
    """``PAIR_INPUTS`` of a batch's edges (``bond_pairs`` with ``operator``), for a program
    that takes them."""
    pairs = bond_pairs(batch[keys.EDGE_INDEX], batch[keys.EDGE_SHIFT], operator)
    return {PAIR_FIRST: pairs.first, PAIR_OF_EDGE: pairs.of_edge}


def _library_operator() -> Callable | None:
    """The ``bond_pairs`` operator of equiforce's kernel library once this process has the
    library (the fast kernels build it at their first call), else None: finding the bonds
    never compiles it (a reference-backend process, e.g. a peer's bench worker, needs no
    compiled extension; the torch formulation gives the same tensors).

    Imported here, not with this module: an exported package's loader imports this module
    and runs the operator of the library the package carries, without equiforce's kernels.
    """
    from equiforce.kernels.extension import kernel_ops_if_loaded, library_operator

    return library_operator("bond_pairs") if kernel_ops_if_loaded() is not None else None


def _find_pairs(
    edge_index: torch.Tensor, edge_shift: torch.Tensor, operator: Callable | None
) -> EdgePairs | None:
    """The pairs of an eager edge list (at least one edge), or None where the keys would
    not fit in int64: ``operator`` (a kernel library's ``bond_pairs``, ``csrc/edge_pairs.cpp``:
    one loop and one sort, the same tensors) on plain CPU tensors, else
    ``_find_pairs_torch``."""
    if (
        operator is not None
        and type(edge_index) is torch.Tensor  # not a tracer's tensor
        and type(edge_shift) is torch.Tensor
        and edge_index.device.type == "cpu"
        and edge_shift.device.type == "cpu"
    ):
        first, of_edge = operator(edge_index, edge_shift)
        return EdgePairs(first, of_edge) if first.shape[0] else None
    return _find_pairs_torch(edge_index, edge_shift)


def _find_pairs_torch(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> EdgePairs | None:
    """``_find_pairs`` in torch operations (any device)."""
    n_edges = edge_index.shape[1]
    centre, neighbour = edge_index[0], edge_index[1]
    shift = edge_shift.round().to(torch.int64)
    reach = int(shift.abs().max())
    base = 2 * reach + 1
    n_nodes = int(edge_index.max()) + 1
    if n_nodes * n_nodes * base**3 >= _MAX_KEY:
        return None
    # the shift as seen from the lower-numbered atom; i -> i images pair S with -S, keyed by
    # the larger of the two codes
    code = _shift_code(shift, reach, base)
    flipped = _shift_code(-shift, reach, base)
    code = torch.where(
        centre < neighbour,
        code,
        torch.where(centre > neighbour, flipped, torch.maximum(code, flipped)),
    )
    low, high = torch.minimum(centre, neighbour), torch.maximum(centre, neighbour)
    bond = (low * n_nodes + high) * base**3 + code
    unique, of_edge = torch.unique(bond, return_inverse=True)
    n_pairs = unique.shape[0]
    edges = torch.arange(n_edges, device=bond.device)
    first = torch.full((n_pairs,), n_edges, dtype=torch.int64, device=bond.device)
    first = first.scatter_reduce(0, of_edge, edges, "amin")
    return EdgePairs(first, of_edge)


def _shift_code(shift: torch.Tensor, reach: int, base: int) -> torch.Tensor:
    """(n_edges, 3) int64 shifts in [-reach, reach] -> (n_edges,) int64 in [0, base^3)."""
    digits = shift + reach
    return (digits[:, 0] * base + digits[:, 1]) * base + digits[:, 2]
