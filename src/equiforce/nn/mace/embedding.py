"""Node and edge embeddings: species one-hot -> scalars, edge vectors -> SH and radial basis."""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.o3.radial import bessel_basis, polynomial_cutoff
from equiforce.o3.spherical_harmonics import spherical_harmonics


class SpeciesEmbedding(nn.Module):
    """Linear map of the species one-hot vector to ``num_channels`` scalars.

    ``h[n] = W[type_n] / sqrt(n_types)``, e3nn ``o3.Linear(n_types x 0e, C x 0e)`` applied to
    a one-hot vector, same flat layout.

    Parameters: ``weight`` (n_types * num_channels,) float64, N(0, 1).

    Args:
        n_types: number of species.
        num_channels: output scalars.
        generator: random source for the initial weights.
    """

    def __init__(self, n_types: int, num_channels: int, generator: torch.Generator):
        super().__init__()
        self.n_types, self.num_channels = n_types, num_channels
        weight = torch.randn(n_types * num_channels, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(weight)

    def forward(self, atom_type: torch.Tensor) -> torch.Tensor:
        """(n_atoms,) int64 -> (n_atoms, num_channels)."""
        table = self.weight.reshape(self.n_types, self.num_channels)
        return table[atom_type] / math.sqrt(self.n_types)


class EdgeEmbedding(nn.Module):
    """Edge spherical harmonics and the radial basis ``bessel(r) * envelope(r)``.

    No parameters.

    Args:
        max_ell: highest SH degree.
        r_max: cutoff, Å.
        num_radial_basis: Bessel functions.
        num_polynomial_cutoff: envelope order ``p``.
    """

    def __init__(
        self, max_ell: int, r_max: float, num_radial_basis: int, num_polynomial_cutoff: int
    ):
        super().__init__()
        self.max_ell = max_ell
        self.r_max = r_max
        self.num_radial_basis = num_radial_basis
        self.num_polynomial_cutoff = num_polynomial_cutoff

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed edge vectors.

        Args:
            vectors: (n_edges, 3) model dtype, Å, non-zero.

        Returns:
            ``edge_attrs`` (n_edges, (max_ell + 1)^2) and ``edge_radial``
            (n_edges, num_radial_basis).
        """
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
        radial = bessel_basis(lengths, self.r_max, self.num_radial_basis)
        envelope = polynomial_cutoff(lengths, self.r_max, self.num_polynomial_cutoff)
        return spherical_harmonics(self.max_ell, vectors), radial * envelope
