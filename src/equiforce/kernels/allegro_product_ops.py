"""Allegro's tensor product against the centre's per-atom factor, differentiable to any order.

Two operators of the kernel library (``csrc/allegro_product.cpp``, registered in
``csrc/kernel_ops.cpp``; ``extension.kernel_ops``), the partial derivatives of one trilinear
form over the pairs,

    F = sum_{e, i, k, u} y[k, e, u] * x[i, e, u] * p[centre[e], i, k, u]:

* ``gather_contract(x, p, centre) = dF/dy``: ``out[k, e, u] = sum_i x[i, e, u] p[centre[e],
  i, k, u]``, pair features (component-major ``(d1, n_edges, U)``) against their centre's
  factor (atom-major ``(n_atoms, d1, d2, U)``: one contiguous block per pair), out
  ``(d2, n_edges, U)``;
* ``scatter_outer(x, y, centre, n_atoms) = dF/dp``: ``q[n, i, k, u] = sum_{e: centre[e] = n}
  x[i, e, u] y[k, e, u]``, out ``(n_atoms, d1, d2, U)``.

The gradient of each with respect to any input is one of the two again (``p`` transposed in
its axes 1 and 2 where ``x`` and ``y`` swap roles), so forces and force training never
build the ``(d1, d2, n_edges, U)`` product a torch formulation gathers (81 numbers per pair
and channel at l_max 2). Their autograd kernels are C++ (``csrc/allegro_product.cpp``: a
Python formula cost ~0.1 ms per call, a tenth of a tiny Allegro's call on a molecule); this
module registers their fake (meta) formulas, so ``make_fx``, ``torch.compile`` and
``torch.export`` trace them as opaque calls and exported packages call the same kernels.
Support: CPU, float32 and float64, contiguous inputs (the functions below make them so);
deterministic for any thread count.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from equiforce.kernels.extension import kernel_ops

__all__ = ["gather_contract", "scatter_outer"]


def _ops():
    """``torch.ops.<namespace>`` of the kernel library, with this module's fake (meta)
    formulas registered on the first call."""
    return _registered(kernel_ops().namespace)


@functools.lru_cache(maxsize=1)
def _registered(namespace: str):
    torch.library.register_fake(f"{namespace}::allegro_gather_contract", _gather_contract_fake)
    torch.library.register_fake(f"{namespace}::allegro_scatter_outer", _scatter_outer_fake)
    return getattr(torch.ops, namespace)


def gather_contract(x: Tensor, p: Tensor, centre: Tensor) -> Tensor:
    """``out[k, e, u] = sum_i x[i, e, u] * p[centre[e], i, k, u]``.

    Args:
        x: (d1, n_edges, U) pair features, component-major.
        p: (n_atoms, d1, d2, U) factor per atom.
        centre: (n_edges,) int64 centre atom of each pair.

    Returns:
        (d2, n_edges, U), the dtype of ``x``.
    """
    return _ops().allegro_gather_contract(x.contiguous(), p.contiguous(), centre.contiguous())


def scatter_outer(x: Tensor, y: Tensor, centre: Tensor, n_atoms: int) -> Tensor:
    """``q[n, i, k, u] = sum_{e: centre[e] = n} x[i, e, u] * y[k, e, u]``.

    Args:
        x: (d1, n_edges, U).
        y: (d2, n_edges, U).
        centre: (n_edges,) int64 centre atom of each pair.
        n_atoms: atoms (zero rows for atoms without pairs).

    Returns:
        (n_atoms, d1, d2, U), the dtype of ``x``.
    """
    return _ops().allegro_scatter_outer(
        x.contiguous(), y.contiguous(), centre.contiguous(), n_atoms
    )


def _gather_contract_fake(x, p, centre):
    return x.new_empty(p.shape[2], x.shape[1], x.shape[2])


def _scatter_outer_fake(x, y, centre, n_atoms):
    return x.new_empty(n_atoms, x.shape[0], y.shape[0], x.shape[2])
