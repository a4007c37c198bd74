"""Allegro's tensor track on pairs in C++ (``csrc/allegro_tensor_track.cpp``, the kernel
library's ``allegro_weighted_channels``, ``allegro_environment`` and
``allegro_weighting_backward``).

Three operators, the partial derivatives of one trilinear form over the pairs (the C++ file
gives it), each one loop where torch needs a handful of passes over pair-sized tensors (on
one molecule of the tiny Allegro every op costs its dispatch; on a batch, its memory traffic;
in an exported package, Inductor's gather loops):

* ``weighted_channels``: the initial pair tensor features, ``out[i, e, u] = basis[e, i] *
  w[e, u * n_irreps + irrep(i)]``, component-major ``(dim, n_edges, mul)``
  (``nn.allegro.mlp.WeightedChannels``);
* ``environment``: a layer's environment, ``env[n, i * mul + u] = sum_{e: centre[e] = n}
  basis[e, i] * w[e, u * n_irreps + irrep(i)]``, the weighted harmonics summed over each
  atom's pairs (``nn.allegro.mlp.EdgeMajorWeightedChannels.environment``);
* ``allegro_weighting_backward``, the gradients of both with respect to the basis and the
  weights, which only their autograd kernels call.

The autograd kernels are C++ and differentiate each operator with the others, so every
order is exact (force training); this module registers their fake (meta) formulas, so
``make_fx``, ``torch.compile`` and ``torch.export`` trace them as opaque calls and exported
packages run the same loops as eager code. Support: CPU, float32 and float64, where the kernel
library builds (``use_tensor_track_kernels``); deterministic for any thread count.
"""

from __future__ import annotations

import functools

import torch

from equiforce.kernels.extension import kernel_ops, kernel_ops_apply

__all__ = ["environment", "use_tensor_track_kernels", "weighted_channels"]


def use_tensor_track_kernels(*tensors: torch.Tensor) -> bool:
    """Whether the ops apply to these float operands (module docstring)."""
    dtype = tensors[0].dtype
    return all(t.dtype == dtype for t in tensors) and all(
        kernel_ops_apply(t.device, dtype) for t in tensors
    )


def _ops():
    """``torch.ops.<namespace>`` of the kernel library, with this module's fake (meta)
    formulas registered on the first call."""
    return _registered(kernel_ops().namespace)


@functools.lru_cache(maxsize=1)
def _registered(namespace: str):
    fakes = {
        "allegro_weighted_channels": _weighted_channels_fake,
        "allegro_environment": _environment_fake,
        "allegro_weighting_backward": _weighting_backward_fake,
    }
    for name, fake in fakes.items():
        torch.library.register_fake(f"{namespace}::{name}", fake)
    return getattr(torch.ops, namespace)


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
    return _ops().allegro_weighted_channels.default(basis, weights, irrep_of, mul)


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
    return _ops().allegro_environment.default(
        basis, weights, irrep_of, centre.contiguous(), mul, n_atoms
    )


def _weighted_channels_fake(basis, weights, irrep_of, mul):
    return basis.new_empty(basis.shape[1], basis.shape[0], mul)


def _environment_fake(basis, weights, irrep_of, centre, mul, n_atoms):
    return basis.new_empty(n_atoms, basis.shape[1] * mul)


def _weighting_backward_fake(g, basis, weights, irrep_of, centre, mul):
    return basis.new_empty(basis.shape), weights.new_empty(weights.shape)
