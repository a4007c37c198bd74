"""Autograd formulas of the C++ symmetric-contraction operators (``csrc/symmetric_contraction``).

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
Hessian term is) are rarer and take a plain-torch path over the same monomials
(``_torch_gradient``), differentiable to any order.

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

from equiforce.kernels.backward_needs import needed_inputs
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
    n_types: int


def _ops():
    """``torch.ops.<namespace>`` of the kernel library (``extension.kernel_ops``), with the
    kernels' fake (meta) implementations registered on the first call (the autograd formulas
    are the functions below)."""
    return _registered(kernel_ops().namespace)


@functools.lru_cache(maxsize=1)
def _registered(namespace: str):
    def forward_fake(p, x, v, atom_type, pairs, cubes, terms, n_out):
        return x.new_empty(x.shape[0], n_out, x.shape[2])

    def moment_fake(g, x, v, atom_type, pairs, cubes, terms, n_types):
        return x.new_empty(n_types, terms.shape[1], x.shape[2])

    def gradient_fake(p, g, x, v, atom_type, pairs, cubes, terms):
        return x.new_empty(x.shape)

    for name, fake, setup, backward in (
        ("sc_forward", forward_fake, _setup_forward, _forward_backward),
        ("sc_moment", moment_fake, _setup_moment, _moment_backward),
        ("sc_gradient", gradient_fake, _setup_gradient, _gradient_backward),
    ):
        torch.library.register_fake(f"{namespace}::{name}", fake)
        torch.library.register_autograd(f"{namespace}::{name}", backward, setup_context=setup)
    return getattr(torch.ops, namespace)


def _forward(p: Tensor, x: Tensor, v: Tensor | None, table: MonomialTable) -> Tensor:
    t = table
    return _ops().sc_forward(p, x, v, t.atom_type, t.pairs, t.cubes, t.terms, t.n_out)


def _moment(g: Tensor, x: Tensor, v: Tensor | None, table: MonomialTable) -> Tensor:
    t = table
    return _ops().sc_moment(g, x, v, t.atom_type, t.pairs, t.cubes, t.terms, t.n_types)


def _gradient(p: Tensor, g: Tensor, x: Tensor, v: Tensor | None, table: MonomialTable) -> Tensor:
    t = table
    return _ops().sc_gradient(p, g, x, v, t.atom_type, t.pairs, t.cubes, t.terms)


# The operators' inputs after the tensors they differentiate: atom_type, pairs, cubes, terms
# (then sc_forward's n_out or sc_moment's n_types); ``needed_inputs`` counts the tensors.
_TABLE_TENSORS = (True, True, True, True)


def _setup_forward(ctx, inputs, output) -> None:
    p, x, v, atom_type, pairs, cubes, terms, n_out = inputs
    ctx.table = MonomialTable(atom_type, pairs, cubes, terms, n_out, p.shape[0])
    ctx.is_tensor = (True, True, v is not None, *_TABLE_TENSORS, False)
    ctx.save_for_backward(p, x, v)


def _forward_backward(ctx, grad):
    p, x, v = ctx.saved_tensors
    table, need = ctx.table, needed_inputs(ctx, ctx.is_tensor)
    grad_p = _moment(grad, x, v, table) if need[0] else None
    grad_x = _gradient(p, grad, x, v, table) if need[1] else None
    grad_v = _gradient(p, grad, x, None, table) if v is not None and need[2] else None
    return grad_p, grad_x, grad_v, None, None, None, None, None


def _setup_moment(ctx, inputs, output) -> None:
    g, x, v, atom_type, pairs, cubes, terms, n_types = inputs
    ctx.table = MonomialTable(atom_type, pairs, cubes, terms, g.shape[1], n_types)
    ctx.is_tensor = (True, True, v is not None, *_TABLE_TENSORS, False)
    ctx.save_for_backward(g, x, v)


def _moment_backward(ctx, grad):
    g, x, v = ctx.saved_tensors
    table, need = ctx.table, needed_inputs(ctx, ctx.is_tensor)
    grad_g = _forward(grad, x, v, table) if need[0] else None
    grad_x = _gradient(grad, g, x, v, table) if need[1] else None
    grad_v = _gradient(grad, g, x, None, table) if v is not None and need[2] else None
    return grad_g, grad_x, grad_v, None, None, None, None, None


def _setup_gradient(ctx, inputs, output) -> None:
    p, g, x, v, atom_type, pairs, cubes, terms = inputs
    ctx.table = MonomialTable(atom_type, pairs, cubes, terms, g.shape[1], p.shape[0])
    ctx.is_tensor = (True, True, True, v is not None, *_TABLE_TENSORS)
    ctx.save_for_backward(p, g, x, v)


def _gradient_backward(ctx, grad):
    p, g, x, v = ctx.saved_tensors
    table, need = ctx.table, needed_inputs(ctx, ctx.is_tensor)
    if v is not None and any(need[:3]):
        return _third_derivatives(grad, p, g, x, v, table, need)
    # d/dv of a gradient with direction v is the same Hessian applied to ``grad``
    grad_v = _gradient(p, g, x, grad, table) if v is not None and need[3] else None
    if v is not None:
        return None, None, None, grad_v, None, None, None, None
    grad_p = _moment(g, x, grad, table) if need[0] else None
    grad_g = _forward(p, x, grad, table) if need[1] else None
    # a linear polynomial (no pairs) has an x-independent gradient
    curved = table.pairs.shape[1] > 0
    grad_x = _gradient(p, g, x, grad, table) if need[2] and curved else None
    return grad_p, grad_g, grad_x, None, None, None, None, None


def _monomials(x: Tensor, v: Tensor | None, table: MonomialTable) -> Tensor:
    """``mu(x)`` (``v`` None) or its directional derivative ``mu'(x)[v]``, (n, M, C), in torch."""
    a, b = table.pairs
    k, q = table.cubes
    pair = x[:, a] * x[:, b]
    if v is None:
        return torch.cat([x, pair, x[:, k] * pair[:, q]], dim=1)
    pair_dot = v[:, a] * x[:, b] + x[:, a] * v[:, b]
    return torch.cat([v, pair_dot, v[:, k] * pair[:, q] + x[:, k] * pair_dot[:, q]], dim=1)


def _torch_gradient(p: Tensor, g: Tensor, x: Tensor, v: Tensor | None, table: MonomialTable):
    """``dPhi/dx`` (the ``gradient`` kernel) through torch's autograd, differentiable to any
    order; ``x`` must require grad."""
    out, monomial = table.terms
    nu = _monomials(x, v, table)[:, monomial]  # (n, K, C)
    g = g[:, out]  # (n, K, C)
    own = torch.nn.functional.one_hot(table.atom_type, p.shape[0]).to(x.dtype)  # (n, S)
    phi = x.new_zeros(())
    # per species, its atoms masked (shapes independent of the species counts, so it traces
    # symbolically): no (n, K, C) gather of P
    for s in range(p.shape[0]):
        phi = phi + torch.einsum("kc,nkc,nkc->", p[s], g * own[:, s, None, None], nu)
    (grad_x,) = torch.autograd.grad(phi, x, create_graph=True)
    return grad_x


def _third_derivatives(grad, p, g, x, v, table, need) -> tuple:
    """The backward of ``gradient`` with a direction, in torch (``_torch_gradient``)."""
    with torch.enable_grad():
        # Derivatives with respect to aliases are partial ones: ``g`` or ``v`` may depend on
        # ``x`` upstream (a force loss's ``g`` does), and that path is not this function's.
        inputs = [t.view_as(t) if t.requires_grad else t.detach().requires_grad_(True)
                  for t in (p, g, x, v)]
        out = _torch_gradient(*inputs, table)
        wanted = [t for t, n in zip(inputs, need[:4], strict=True) if n]
        found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
    grads = [next(found) if n else None for n in need[:4]]
    grads = [
        torch.zeros_like(t) if n and d is None else d
        for t, n, d in zip(inputs, need[:4], grads, strict=True)
    ]
    return (*grads, None, None, None, None)


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
    return _forward(p, x, None, table)
