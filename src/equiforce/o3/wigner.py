"""Real Clebsch–Gordan coefficients (Wigner 3j symbols) and Wigner D matrices.

e3nn's ``wigner_3j`` flips the sign of some ``(l1, l2, l3)`` between e3nn 0.4.4 and 0.6 (the
magnitudes agree to 1e-15). A model built on it would change its predictions when moved
between the two. ``wigner_3j`` here fixes the sign canonically: the first entry (C order)
that is not zero is positive. So ``C(0, l, l)``, ``C(l, 0, l)`` and ``C(l, l, 0)`` are
``+identity / sqrt(2l + 1)``, and the result is the same under both e3nn versions.

``wigner_D`` is fitted from the spherical harmonics (``Y(R x) = D(R) Y(x)``), independently
of e3nn's Wigner machinery; the tests use it to check the couplings' equivariance.
"""

from __future__ import annotations

import functools
import math

import torch

from equiforce.o3.e3nn_compat import e3nn_o3
from equiforce.o3.spherical_harmonics import spherical_harmonics

_ZERO = 1e-8  # entries below this fraction of the largest are zero in exact arithmetic


def wigner_3j(l1: int, l2: int, l3: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real coupling tensor of ``l1 ⊗ l2 -> l3`` with unit Frobenius norm, canonical sign.

    ``c_k = sum_ij C[i, j, k] a_i b_j`` is equivariant: rotating ``a`` and ``b`` with their
    Wigner D matrices rotates ``c`` with ``D_l3``.

    Args:
        l1: degree of the first input.
        l2: degree of the second input.
        l3: output degree, ``|l1 - l2| <= l3 <= l1 + l2`` (triangle rule).
        dtype: output dtype.

    Returns:
        (2l1+1, 2l2+1, 2l3+1) tensor.

    Raises:
        ValueError: the triangle rule is violated.
    """
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"({l1}, {l2}, {l3}) violates the triangle rule")
    return _canonical_wigner_3j(l1, l2, l3).to(dtype=dtype, copy=True)


@functools.lru_cache(maxsize=None)
def _canonical_wigner_3j(l1: int, l2: int, l3: int) -> torch.Tensor:
    # cached: e3nn 0.6 computes couplings with l >= 3 slowly (~0.1 s each); callers get copies
    coupling = e3nn_o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    flat = coupling.flatten()
    first = torch.nonzero(flat.abs() > _ZERO * flat.abs().max())[0, 0]
    coupling = coupling * torch.sign(flat[first])
    return torch.where(coupling.abs() < 1e-15, torch.zeros_like(coupling), coupling)


def _sphere_points(n: int) -> torch.Tensor:
    """``n`` deterministic, well spread unit vectors (Fibonacci lattice), float64."""
    index = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * index / n
    phi = index * math.pi * (3.0 - math.sqrt(5.0))
    radius = torch.sqrt(1.0 - z**2)
    return torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), z], dim=1)


def wigner_D(ell: int, rotation: torch.Tensor) -> torch.Tensor:  # noqa: N802 (standard name)
    """Wigner D matrix of a 3x3 orthogonal matrix in the real SH basis: ``Y(R x) = D Y(x)``.

    Args:
        ell: degree l.
        rotation: (3, 3) orthogonal matrix (an improper one gives ``det(R)^l`` D(proper)).

    Returns:
        (2l+1, 2l+1) float64 tensor, accurate to ~1e-14.
    """
    points = _sphere_points(6 * ell + 10)
    y = spherical_harmonics(ell, points)[:, ell * ell :]
    y_rotated = spherical_harmonics(ell, points @ rotation.to(torch.float64).T)[:, ell * ell :]
    return torch.linalg.lstsq(y, y_rotated).solution.T
