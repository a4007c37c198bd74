"""Real spherical harmonics of edge directions (e3nn convention, component normalisation)."""

from __future__ import annotations

import torch

from equiforce.o3.e3nn_compat import e3nn_o3


def spherical_harmonics(lmax: int, vectors: torch.Tensor) -> torch.Tensor:
    """Spherical harmonics ``Y_l(v / |v|)`` for ``l = 0..lmax``, concatenated.

    The values are e3nn's ``spherical_harmonics(l, v, normalize=True,
    normalization="component")`` (identical in e3nn 0.4.4 and 0.6): ``|Y_l|^2 = 2l + 1`` on
    the unit sphere and ``Y_1 = sqrt(3) * v / |v|``.

    Args:
        lmax: highest degree.
        vectors: (n, 3) any float dtype; must be non-zero.

    Returns:
        (n, (lmax + 1)^2), the dtype of ``vectors``.
    """
    return e3nn_o3.spherical_harmonics(list(range(lmax + 1)), vectors, True, "component")
