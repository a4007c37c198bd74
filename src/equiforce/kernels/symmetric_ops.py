"""The C++ symmetric-contraction operators (``csrc/symmetric_contraction*.cpp``), differentiable
to any order.

The contraction of ``fast_symmetric`` on CPU: per atom n of species s and channel c,

    y[n, o, c] = sum_{k: out[k] = o} P[s, k, c] mu_{mono[k]}(x[n, :, c]),

with ``mu`` the monomials some output uses (the d components, the ``pairs``, the ``cubes``),
the ``terms`` k = (out[k], mono[k]) the (output, monomial) pairs with a non-zero coefficient
(an equivariant polynomial's monomials each feed few outputs: in MACE-128's first layer 410
of the 4 x 494 pairs), and ``P`` the weights folded into the basis (differentiated by torch).
Three kernels are the partial derivatives of ``Phi = sum G[n, out[k], c] P[s, k, c]
nu_{mono[k]}(n, c)``, where ``nu`` is ``mu(x)`` or, given a direction ``v``, its directional
derivative ``mu'(x)[v]``:

    forward  = dPhi/dG,   moment = dPhi/dP,   gradient = dPhi/dx,

so the backward of each is again these kernels: forces (first backward) and the parameter
gradients of a force loss (second backward) never leave them and build no per-monomial
intermediates (the old torch path kept (C, d * out_dim, n) Horner partials and their
gradients). Third derivatives (the x-, P- or G-derivative of a ``gradient`` that already has
a direction: a Hessian or Hessian-vector loss trained through the model, as distillation's
Hessian term is) are rarer and take a path of differentiable ATen ops over the same monomials.
The autograd kernels are C++ (``csrc/symmetric_contraction_autograd.cpp``); this module
registers the operators' fake (meta) formulas, so ``make_fx``, ``torch.compile`` and
``torch.export`` trace them as opaque calls.

Tensors: ``x``, ``v`` (n, d, C) and ``G`` (n, out_dim, C) channel-last; ``P`` (n_types, K,
C); ``atom_type`` (n,) int64; ``pairs`` (2, n_pairs), ``cubes`` (2, n_cubes), ``terms`` (2, K)
int64.
CPU, float32/float64, deterministic.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from equiforce.kernels.extension import kernel_ops

__all__ = ["MonomialTable", "contract"]


class MonomialTable(NamedTuple):
    """Which monomials exist, which output each coefficient row feeds, and which atom has
    which species (tensors int64)."""

    atom_type: Tensor  # (n,)
    pairs: Tensor  # (2, n_pairs) factors a <= b of x_a x_b
    cubes: Tensor  # (2, n_cubes) [largest factor k, pair q] of x_k * pair_q
    terms: Tensor  # (2, K) [output; monomial] of P's rows, outputs sorted
    n_out: int  # out_dim


def _ops():
    """``torch.ops.<namespace>`` of the kernel library (``extension.kernel_ops``), with the
    kernels' fake (meta) implementations registered on the first call."""
    return _registered(kernel_ops().namespace)


@functools.lru_cache(maxsize=1)
def _registered(namespace: str):
    def forward_fake(p, x, v, atom_type, pairs, cubes, terms, n_out):
        return x.new_empty(x.shape[0], n_out, x.shape[2])

    def moment_fake(g, x, v, atom_type, pairs, cubes, terms, n_types):
        return x.new_empty(n_types, terms.shape[1], x.shape[2])

    def gradient_fake(p, g, x, v, atom_type, pairs, cubes, terms):
        return x.new_empty(x.shape)

    for name, fake in (
        ("sc_forward", forward_fake),
        ("sc_moment", moment_fake),
        ("sc_gradient", gradient_fake),
    ):
        torch.library.register_fake(f"{namespace}::{name}", fake)
    return getattr(torch.ops, namespace)


def contract(p: Tensor, x: Tensor, table: MonomialTable) -> Tensor:
    """``y[n, o, c] = sum_{k: out[k] = o} P[atom_type[n], k, c] mu_{mono[k]}(x[n, :, c])``,
    differentiable to any order (the first two in the C++ kernels).

    Args:
        p: (n_types, K, C) folded coefficients, one row per term of ``table.terms``.
        x: (n, d, C) channel-last features.
        table: the monomials and species.

    Returns:
        (n, out_dim, C).
    """
    t = table
    return _ops().sc_forward(p, x, None, t.atom_type, t.pairs, t.cubes, t.terms, t.n_out)
