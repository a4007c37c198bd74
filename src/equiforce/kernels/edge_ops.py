"""Operators for the fused edge convolution, differentiable to any order.

The three ops are the partial derivatives of one trilinear form over the edges,

    F = sum_e sum_t S[e, c_t] * sum_u A[g(e), ia_t, u] * R[w(e), p_t, u] * B[o(e), ib_t, u],

(see ``csrc/channelwise_tp.cpp``): ``node_out = dF/dB``, ``edge_r = dF/dR``,
``edge_s = dF/dS``. R has one row per edge (w(e) = e) or one per group of edges that share
their weights (the two directions of a bond, ``equiforce.nn.edge_pairs``): then ``edge_r``
sums a row's edges in the kernel, without an (n_edges x features) gather and scatter. The
gradient of each with respect to any input is again one of them with the roles of A and B
(gather and scatter side) possibly swapped, so forces (first backward) and force training
(double backward) never leave these kernels and never build (n_edges x features)
intermediates beyond R and S themselves.

Every op takes the same ``EdgeGraph`` tensors: ``gather`` g and ``other`` o (n_edges,), CSRs
of the edges by o (``perm_o``, ``offsets_o``) and by g (``perm_g``, ``offsets_g``), the row
of R of each edge ``weight_row`` w and the CSR of the edges by it (``perm_w``,
``offsets_w``), and the triple table in two orders, ``triples`` (sorted by (p, ia)) and
``swapped`` (the A and B columns exchanged, sorted by (p, ib)).

The operators (``cwtp_node_out``, ``cwtp_edge_r``, ``cwtp_edge_s``) and their autograd
kernels are C++ (``csrc/kernel_ops.cpp``, ``csrc/channelwise_tp_autograd.cpp``: the library of
``extension.kernel_ops``); this module registers their fake (meta) formulas, so ``make_fx``,
``torch.compile`` and ``torch.export`` trace them as opaque calls and exported packages call
the same kernels. Support: CPU, float32 and float64; deterministic (each output row is summed
by one thread in a fixed order).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from equiforce.kernels.extension import kernel_ops

__all__ = ["EdgeGraph", "edge_graph", "edge_r", "edge_s", "node_out"]


class EdgeGraph(NamedTuple):
    """Index tensors shared by the ops (all int64, on the device of the features)."""

    gather: Tensor  # (n_edges,) row of A for each edge
    other: Tensor  # (n_edges,) row of B for each edge
    perm_o: Tensor  # (n_edges,) edges sorted by ``other``
    offsets_o: Tensor  # (n_b + 1,) CSR offsets into ``perm_o``
    perm_g: Tensor  # (n_edges,) edges sorted by ``gather``
    offsets_g: Tensor  # (n_a + 1,) CSR offsets into ``perm_g``
    weight_row: Tensor  # (n_edges,) row of R for each edge
    perm_w: Tensor  # (n_edges,) edges sorted by ``weight_row``
    offsets_w: Tensor  # (n_r + 1,) CSR offsets into ``perm_w``
    triples: Tensor  # (T, 4) [p, ia, ib, column of S], sorted by (p, ia)
    swapped: Tensor  # (T, 4) [p, ib, ia, column of S], sorted by (p, ib)


def _csr(index: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """Edges sorted by ``index`` (stable) and the (n_rows + 1,) offsets of each row's run.

    The offsets come from a binary search of every row in the sorted index, not from
    ``bincount`` (whose output size depends on the data), so the shapes depend only on the
    edge and row counts and ``make_fx`` traces them symbolically.
    """
    perm = torch.argsort(index, stable=True)
    rows = torch.arange(n_rows + 1, dtype=index.dtype, device=index.device)
    return perm, torch.searchsorted(index[perm], rows)


def edge_graph(
    gather: Tensor,
    other: Tensor,
    n_a: int,
    n_b: int,
    triples: Tensor,
    swapped: Tensor,
    weight_row: Tensor | None = None,
    n_weight_rows: int | None = None,
) -> EdgeGraph:
    """Build the CSRs of an edge list for the ops.

    Args:
        gather: (n_edges,) int64 row of A per edge (e.g. the sender).
        other: (n_edges,) int64 row of B per edge (e.g. the receiver).
        n_a: rows of A.
        n_b: rows of B.
        triples: (T, 4) triple table sorted by (p, ia) (see module docstring).
        swapped: the same with the A and B columns exchanged, sorted by (p, ib).
        weight_row: (n_edges,) int64 row of R per edge, or None: one row per edge.
        n_weight_rows: rows of R (needed with ``weight_row``).
    """
    perm_o, offsets_o = _csr(other, n_b)
    perm_g, offsets_g = _csr(gather, n_a)
    if weight_row is None:
        weight_row = torch.arange(gather.shape[0], dtype=gather.dtype, device=gather.device)
        perm_w = weight_row
        offsets_w = torch.arange(gather.shape[0] + 1, dtype=gather.dtype, device=gather.device)
    else:
        if n_weight_rows is None:
            raise ValueError("edge_graph: weight_row needs n_weight_rows")
        perm_w, offsets_w = _csr(weight_row, n_weight_rows)
    return EdgeGraph(
        gather,
        other,
        perm_o,
        offsets_o,
        perm_g,
        offsets_g,
        weight_row,
        perm_w,
        offsets_w,
        triples,
        swapped,
    )


def _ops():
    """``torch.ops.<namespace>`` of the kernel library (``extension.kernel_ops``), with this
    module's fake (meta) formulas registered on the first call."""
    return _registered(kernel_ops().namespace)


@functools.lru_cache(maxsize=1)
def _registered(namespace: str):
    for name, fake in (
        ("cwtp_node_out", _node_out_fake),
        ("cwtp_edge_r", _edge_r_fake),
        ("cwtp_edge_s", _edge_s_fake),
    ):
        torch.library.register_fake(f"{namespace}::{name}", fake)
    return getattr(torch.ops, namespace)


def node_out(a: Tensor, s: Tensor, r: Tensor, graph: EdgeGraph, n_out: int, d_out: int) -> Tensor:
    """``out[o, ib, u] = sum_{e: other(e) = o} sum_t S[e, c_t] A[gather(e), ia_t, u]
    R[w(e), p_t, u]``.

    Args:
        a: (n_a, d_a, U) gathered node tensor.
        s: (n_edges, T) coupling coefficients per edge.
        r: (n_r, n_paths, U) path weights; edge e reads row ``graph.weight_row[e]``.
        graph: the edge graph.
        n_out: rows of the output.
        d_out: components of the output.

    Returns:
        (n_out, d_out, U).
    """
    return _ops().cwtp_node_out(a, s, r, *graph, n_out, d_out)


def edge_r(a: Tensor, s: Tensor, b: Tensor, graph: EdgeGraph, n_paths: int) -> Tensor:
    """``out[w, p, u] = sum_{e: w(e) = w} sum_{t: p_t = p} S[e, c_t] A[gather(e), ia_t, u]
    B[other(e), ib_t, u]``.

    Returns:
        (n_r, n_paths, U): the gradient of R's rows.
    """
    return _ops().cwtp_edge_r(a, s, b, *graph, n_paths)


def edge_s(a: Tensor, r: Tensor, b: Tensor, graph: EdgeGraph) -> Tensor:
    """``out[e, c_t] = sum_u A[gather(e), ia_t, u] R[w(e), p_t, u] B[other(e), ib_t, u]``.

    Returns:
        (n_edges, T).
    """
    return _ops().cwtp_edge_s(a, r, b, *graph)


def _node_out_fake(a, s, r, *rest):
    n_out, d_out = rest[-2], rest[-1]
    return a.new_empty(n_out, d_out, a.shape[2])


def _edge_r_fake(a, s, b, *rest):
    offsets_w = rest[EdgeGraph._fields.index("offsets_w")]
    return a.new_empty(offsets_w.shape[0] - 1, rest[-1], a.shape[2])


def _edge_s_fake(a, r, b, *rest):
    gather, swapped = rest[0], rest[-1]
    return a.new_empty(gather.shape[0], swapped.shape[0])
