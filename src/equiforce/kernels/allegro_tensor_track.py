"""Allegro's tensor track on pairs in C++ (``csrc/allegro_tensor_track.cpp``, the kernel
library's ``allegro_weighted_channels`` and ``allegro_environment``).

Two ops, each one loop forward and one backward where torch needs a handful of passes over
pair-sized tensors (on one molecule of the tiny Allegro every op costs its dispatch; on a
batch, its memory traffic):

* ``weighted_channels``: the initial pair tensor features, ``out[i, e, u] = basis[e, i] *
  w[e, u * n_irreps + irrep(i)]``, component-major ``(dim, n_edges, mul)``
  (``nn.allegro.mlp.WeightedChannels``; torch: a gather of the weights per component and a
  product, and in the backward two products, a sum, a scatter-add and a transposing copy);
* ``environment``: a layer's environment, ``env[n, i * mul + u] = sum_{e: centre[e] = n}
  basis[e, i] * w[e, u * n_irreps + irrep(i)]``, the weighted harmonics summed over each
  atom's pairs (``nn.allegro.mlp.EdgeMajorWeightedChannels.environment``; torch: two one-hot
  GEMMs, a product and a scatter-add, and a gather, two products and two GEMMs backward).

A derivative taken with ``create_graph`` (force training) runs differentiable ATen ops, so
every order is exact. Used for CPU float32/float64 tensors outside tracing (``torch.export``,
``torch.compile`` and TorchScript see the torch ops), where the kernel library builds.
"""

from __future__ import annotations

import torch

from equiforce.kernels.extension import kernel_ops, library_operator
from equiforce.kernels.tracing import traced

__all__ = ["environment", "use_tensor_track_kernels", "weighted_channels"]


def use_tensor_track_kernels(*tensors: torch.Tensor) -> bool:
    """Whether the ops apply to these float operands (module docstring)."""
    dtype = tensors[0].dtype
    return (
        not traced(*tensors)
        and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
        and dtype in (torch.float32, torch.float64)
        and kernel_ops() is not None
    )


def weighted_channels(
    basis: torch.Tensor, weights: torch.Tensor, irrep_of: torch.Tensor, mul: int
) -> torch.Tensor:
    """``out[i, e, u] = basis[e, i] * weights[e, u * n_irreps + irrep_of[i]]`` (C++).

    Args:
        basis: (n_edges, dim).
        weights: (n_edges, mul * n_irreps), channel-major.
        irrep_of: (dim,) int64 irrep of each basis component.
        mul: channels.

    Returns:
        (dim, n_edges, mul) contiguous, the dtype of ``basis``.
    """
    return library_operator("allegro_weighted_channels")(basis, weights, irrep_of, mul)


def environment(
    basis: torch.Tensor,
    weights: torch.Tensor,
    irrep_of: torch.Tensor,
    centre: torch.Tensor,
    mul: int,
    n_atoms: int,
) -> torch.Tensor:
    """``env[n, i * mul + u] = sum_{e: centre[e] = n} basis[e, i] * weights[e, u * n_irreps +
    irrep_of[i]]`` (C++).

    Args:
        basis: (n_edges, dim).
        weights: (n_edges, mul * n_irreps), channel-major.
        irrep_of: (dim,) int64 irrep of each basis component.
        centre: (n_edges,) int64 centre atom of each pair.
        mul: channels.
        n_atoms: atoms (rows of the result).

    Returns:
        (n_atoms, dim * mul), the dtype of ``basis``; zero for atoms without pairs.
    """
    return library_operator("allegro_environment")(
        basis, weights, irrep_of, centre.contiguous(), mul, n_atoms
    )
