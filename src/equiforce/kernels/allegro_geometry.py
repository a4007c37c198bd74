"""Fused edge geometry of Allegro's two-body embedding: lengths, Bessel basis, harmonics.

One autograd node (``EdgeGeometry``) instead of ~30 small ops and their ~45 backward ops:
from the float64 edge vectors it returns, in the model dtype, the enveloped Bessel basis
``b_n(x) = sin(n pi x) * envelope(x) / (pi x)`` (``x = r / r_max``, ``n = 1..N``) and, for
``l_max <= 1``, the edge spherical harmonics ``[1, sqrt(3) v / r]`` (``Y_0`` only for
``l_max = 0``). The backward is written out by hand:

    db_n/dx = n pi cos(n pi x) f(x) + sin(n pi x) f'(x),   f = envelope / (pi x),
    f'(x) = (envelope'(x) - envelope(x) / x) / (pi x),
    dL/dv = (dL/dr) v / r + sqrt(3) (g - u (u . g)) / r,   u = v / r,  g = dL/dY_1.

On a small structure (one molecule, ~200 pairs) every op costs its dispatch and autograd
bookkeeping (~5-8 us each), which is most of the call; this node removes about a quarter of
the tiny Allegro's ops. The backward is plain differentiable torch ops of the saved input:
when gradients of gradients are wanted (force training, ``create_graph``), it recomputes the
intermediates from the input with autograd recording, so every grad order stays exact; in
plain inference it reuses the forward's intermediates.

The unfused definitions are ``equiforce.nn.allegro.embedding.enveloped_bessel_basis`` and
``unit_sh``; ``tests/kernels/test_allegro_geometry.py`` checks values, first and second
derivatives against them in float64 to 1e-12.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["edge_geometry"]


def _envelope_coefficients(p: int) -> tuple[float, float, float]:
    """``envelope(x) = 1 + x^p (c0 + c1 x + c2 x^2)`` (``o3.radial.polynomial_cutoff``)."""
    return -(p + 1.0) * (p + 2.0) / 2.0, p * (p + 2.0), -p * (p + 1.0) / 2.0


def _forward_parts(
    vec: torch.Tensor, scale: torch.Tensor | float, num_basis: int, p: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Every intermediate the backward needs, from the float64 vectors (any grad mode)."""
    v = vec.to(dtype)
    r = torch.linalg.norm(v, dim=-1, keepdim=True)
    x = r * scale
    c0, c1, c2 = _envelope_coefficients(p)
    inside = x < 1.0
    x_pm1 = x.pow(p - 1)
    envelope = (1.0 + x_pm1 * x * (c0 + x * (c1 + x * c2))) * inside
    d_envelope = x_pm1 * (p * c0 + x * ((p + 1) * c1 + x * ((p + 2) * c2))) * inside
    n_pi = torch.arange(1, num_basis + 1, dtype=dtype, device=vec.device) * math.pi
    phase = x * n_pi
    f = envelope / (math.pi * x)
    return {
        "v": v,
        "r": r,
        "x": x,
        "n_pi": n_pi,
        "phase": phase,
        "sin": torch.sin(phase),
        "f": f,
        "df": (d_envelope - envelope / x) / (math.pi * x),
    }


def _harmonics(l_max: int, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    ones = torch.ones_like(r)
    if l_max == 0:
        return ones
    return torch.cat((ones, v * (math.sqrt(3.0) / r)), dim=-1)


def _vector_gradient(
    parts: dict[str, torch.Tensor],
    scale: torch.Tensor | float,
    grad_basis: torch.Tensor | None,
    grad_sh: torch.Tensor | None,
    l_max: int,
) -> torch.Tensor:
    """``dL/dv`` (n_edges, 3) in the geometry dtype from ``dL/dbasis`` and ``dL/dY``."""
    v, r = parts["v"], parts["r"]
    u = v / r
    grad_v = torch.zeros_like(v)
    if grad_basis is not None:
        d_x = parts["f"] * ((grad_basis * torch.cos(parts["phase"])) @ parts["n_pi"]).unsqueeze(-1)
        d_x = d_x + parts["df"] * (grad_basis * parts["sin"]).sum(-1, keepdim=True)
        grad_v = grad_v + (d_x * scale) * u
    if grad_sh is not None and l_max >= 1:
        g = grad_sh[:, 1:4]
        tangential = g - u * (u * g).sum(-1, keepdim=True)
        grad_v = grad_v + tangential * (math.sqrt(3.0) / r)
    return grad_v


class EdgeGeometry(torch.autograd.Function):
    """``(basis, sh)`` of float64 edge vectors in one node (module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        vec: torch.Tensor,
        scale: torch.Tensor | float,
        num_basis: int,
        p: int,
        l_max: int,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = _forward_parts(vec, scale, num_basis, p, dtype)
        basis = parts["sin"] * parts["f"]
        sh = _harmonics(l_max, parts["v"], parts["r"])
        ctx.settings = (num_basis, p, l_max, dtype, scale if isinstance(scale, float) else None)
        tensors = [] if isinstance(scale, float) else [scale]
        ctx.save_for_backward(vec, *tensors)
        ctx.parts = parts
        return basis, sh

    @staticmethod
    def backward(ctx: Any, grad_basis: torch.Tensor | None, grad_sh: torch.Tensor | None):  # type: ignore[override]
        num_basis, p, l_max, dtype, float_scale = ctx.settings
        vec, *tensors = ctx.saved_tensors
        scale = float_scale if float_scale is not None else tensors[0]
        if torch.is_grad_enabled():  # a derivative of this gradient will be taken
            parts = _forward_parts(vec, scale, num_basis, p, dtype)
        else:
            parts = ctx.parts
        grad_v = _vector_gradient(parts, scale, grad_basis, grad_sh, l_max)
        return grad_v.to(vec.dtype), None, None, None, None, None


def edge_geometry(
    vec: torch.Tensor,
    scale: torch.Tensor | float,
    num_basis: int,
    p: int,
    l_max: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Enveloped Bessel basis and edge spherical harmonics (``l_max <= 1``) in one node.

    Args:
        vec: (n_edges, 3) float64 edge vectors, Å, non-zero.
        scale: ``1 / r_max``, a float or (n_edges, 1) per pair in ``dtype`` (not
            differentiated).
        num_basis: Bessel functions ``N``.
        p: envelope order (``o3.radial.polynomial_cutoff``).
        l_max: 0 or 1.
        dtype: geometry and output dtype (float32 or float64).

    Returns:
        ``basis`` (n_edges, N) and ``sh`` (n_edges, (l_max + 1)^2), ``dtype``.
    """
    if l_max > 1:
        raise ValueError(f"edge_geometry computes harmonics up to l_max 1, got {l_max}")
    return EdgeGeometry.apply(vec, scale, num_basis, p, l_max, dtype)
