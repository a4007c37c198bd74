"""Allegro's edge geometry in C++, derivatives by hand (``csrc/allegro_geometry.cpp``, the
kernel library's ``allegro_geometry``).

From the float64 edge vectors, the enveloped Bessel basis ``sin(n pi x) e(x) / (pi x)``
(``x = r / r_max``, ``n = 1..N``) and the ``l <= 1`` spherical harmonics ``[1, sqrt(3) v / r]``,
evaluated in the model's geometry dtype: the values of ``nn.allegro.embedding``'s torch
formulation (``enveloped_bessel_basis``, ``unit_sh``) to rounding. There, ~25 elementwise ops
forward and ~45 in the backward, each a pass over an ``(n_edges, 1..N)`` tensor, were a quarter
of the ops of a tiny Allegro's energy + forces call on one molecule; here the forward is one
loop and the first derivative another. A derivative taken with ``create_graph`` (force
training) is written with differentiable ATen ops of the same formulas, so every order is exact.

Used for CPU float32/float64 geometry with ``l_max <= 1``, outside tracing (``torch.export``,
``torch.compile`` and TorchScript see the torch formulation), where the kernel library builds.
"""

from __future__ import annotations

import torch

from equiforce.kernels.extension import kernel_ops, library_operator
from equiforce.kernels.tracing import traced

__all__ = ["edge_geometry", "use_geometry_kernel"]


def use_geometry_kernel(edge_vec: torch.Tensor, dtype: torch.dtype, l_max: int) -> bool:
    """Whether ``edge_geometry`` applies to these inputs (module docstring)."""
    return (
        not traced(edge_vec)
        and edge_vec.device.type == "cpu"
        and edge_vec.dtype == torch.float64
        and dtype in (torch.float32, torch.float64)
        and l_max <= 1
        and kernel_ops() is not None
    )


def edge_geometry(
    edge_vec: torch.Tensor,
    inverse_r_max: torch.Tensor | float,
    num_basis: int,
    p: int,
    l_max: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Enveloped Bessel basis and ``l <= 1`` harmonics of every edge (C++; see module docstring).

    Args:
        edge_vec: (n_edges, 3) float64, Å, non-zero, CPU.
        inverse_r_max: ``1 / r_max`` of every edge, (n_edges,) tensor, or one float for all.
        num_basis: basis size ``N``.
        p: envelope order (``equiforce.o3.radial.envelope``).
        l_max: 0 or 1.
        dtype: geometry dtype, float32 or float64.

    Returns:
        ``basis`` (n_edges, N) and ``sh`` (n_edges, (l_max + 1)^2), both ``dtype``; the basis
        is zero for ``r >= r_max``.
    """
    per_edge = inverse_r_max if isinstance(inverse_r_max, torch.Tensor) else None
    uniform = 0.0 if per_edge is not None else float(inverse_r_max)
    return library_operator("allegro_geometry")(
        edge_vec, per_edge, uniform, num_basis, p, l_max, dtype == torch.float64
    )
