"""Radial basis functions and smooth cutoff envelopes (pure functions, no weights)."""

from __future__ import annotations

import math

import torch


def bessel_basis(lengths: torch.Tensor, r_max: float, num_basis: int) -> torch.Tensor:
    """Bessel radial basis ``sqrt(2 / r_max) * sin(n pi r / r_max) / r`` for ``n = 1..N``.

    Args:
        lengths: (n_edges, 1) edge lengths, Å, strictly positive.
        r_max: cutoff radius, Å.
        num_basis: number of basis functions ``N``.

    Returns:
        (n_edges, num_basis), the dtype of ``lengths``.
    """
    n = torch.arange(1, num_basis + 1, dtype=lengths.dtype, device=lengths.device)
    frequencies = n * (math.pi / r_max)
    return math.sqrt(2.0 / r_max) * torch.sin(frequencies * lengths) / lengths


def polynomial_cutoff(lengths: torch.Tensor, r_max: float, p: int) -> torch.Tensor:
    """Polynomial envelope going smoothly from 1 at r = 0 to 0 at ``r_max`` (zero beyond).

    ``f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` with
    ``x = r / r_max``; the value and the first two derivatives vanish at ``x = 1``.

    Args:
        lengths: (n_edges, 1) edge lengths, Å.
        r_max: cutoff radius, Å.
        p: polynomial order (MACE's ``num_polynomial_cutoff``, default 5).

    Returns:
        (n_edges, 1), the dtype of ``lengths``.
    """
    return envelope(lengths / r_max, p) * (lengths < r_max)


def envelope(x: torch.Tensor, p: int) -> torch.Tensor:
    """``polynomial_cutoff``'s polynomial at normalised lengths ``x = r / r_max``, any ``x``.

    Horner form, ``1 + x^p (a + x (b + c x))``: one power and a few products (the call is
    per-operation bound on small systems).

    Args:
        x: (n_edges, 1) normalised lengths.
        p: polynomial order.

    Returns:
        (n_edges, 1), the dtype of ``x``.
    """
    a, b, c = -(p + 1.0) * (p + 2.0) / 2.0, p * (p + 2.0), -p * (p + 1.0) / 2.0
    return 1.0 + torch.pow(x, p) * (a + x * (b + c * x))


def agnesi_transform(
    lengths: torch.Tensor, pair_radius: torch.Tensor, q: float, p: float, a: float
) -> torch.Tensor:
    """The Agnesi distance transform of ACEpotentials (Witt et al., J. Chem. Phys. 159,
    164101 (2023)), mace-torch's ``distance_transform="Agnesi"``.

    ``y = 1 / (1 + a x^q / (1 + x^(q - p)))`` with ``x = r / r_0``: 1 at r = 0, falling
    through ~1/2 near the pair's bond length ``r_0`` to 0, so the radial basis resolves short
    bonds of every pair alike.

    Args:
        lengths: (n_edges, 1) edge lengths, Å, strictly positive.
        pair_radius: (n_edges, 1) ``r_0`` of each edge's pair (half the sum of the two
            covalent radii), Å.
        q, p, a: the transform's constants (mace-torch: 0.9183, 4.5791, 1.0805).

    Returns:
        (n_edges, 1) transformed lengths (dimensionless), the dtype of ``lengths``.
    """
    x = lengths / pair_radius
    return 1.0 / (1.0 + a * torch.pow(x, q) / (1.0 + torch.pow(x, q - p)))
