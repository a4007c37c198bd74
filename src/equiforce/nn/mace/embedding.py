"""Node and edge embeddings: species one-hot -> scalars, edge vectors -> SH and radial basis."""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.o3.radial import agnesi_transform, bessel_basis, polynomial_cutoff
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
    """Edge spherical harmonics and the radial basis ``bessel(r) * envelope(r)``, or with
    the Agnesi transform ``bessel(y(r)) * envelope(r)`` (``agnesi_transform``; mace-torch's
    ``distance_transform="Agnesi"``).

    No parameters. With the transform, a buffer ``covalent_radii`` (n_types,) Å of the
    model's species (``ase.data.covalent_radii``; not in the state dict: the spec's
    ``type_names`` give it). With ``apply_cutoff`` False (mace-torch's option of the name)
    the radial basis comes without the envelope, which follows as one last column for the
    interactions to apply after their MLPs (``split_envelope``).

    Args:
        max_ell: highest SH degree.
        r_max: cutoff, Å.
        num_radial_basis: Bessel functions.
        num_polynomial_cutoff: envelope order ``p``.
        agnesi: the transform's (q, p, a), or None (no transform).
        type_names: the model's species (with ``agnesi``).
        apply_cutoff: multiply the basis by the envelope (True), or hand the envelope on.
    """

    def __init__(
        self,
        max_ell: int,
        r_max: float,
        num_radial_basis: int,
        num_polynomial_cutoff: int,
        agnesi: tuple[float, float, float] | None = None,
        type_names: tuple[str, ...] = (),
        apply_cutoff: bool = True,
    ):
        super().__init__()
        self.apply_cutoff = apply_cutoff
        self.max_ell = max_ell
        self.r_max = r_max
        self.num_radial_basis = num_radial_basis
        self.num_polynomial_cutoff = num_polynomial_cutoff
        self.agnesi = agnesi
        if agnesi is not None:
            from ase.data import atomic_numbers, covalent_radii

            radii = [covalent_radii[atomic_numbers[name]] for name in type_names]
            radii = torch.tensor(radii, dtype=torch.float64)  # from type_names: not saved
            self.register_buffer("covalent_radii", radii, persistent=False)

    @property
    def needs_types(self) -> bool:
        """Whether ``forward`` needs the edges' species (the Agnesi transform)."""
        return self.agnesi is not None

    def forward(
        self, vectors: torch.Tensor, edge_types: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed edge vectors.

        Args:
            vectors: (n_edges, 3) model dtype, Å, non-zero.
            edge_types: the species (``atom_type``) of each edge's two atoms, two (n_edges,)
                int64, in either order; needed with the Agnesi transform (``needs_types``).

        Returns:
            ``edge_attrs`` (n_edges, (max_ell + 1)^2) and ``edge_radial``
            (n_edges, num_radial_basis), or without ``apply_cutoff`` (n_edges,
            num_radial_basis + 1): the basis and the envelope.
        """
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
        envelope = polynomial_cutoff(lengths, self.r_max, self.num_polynomial_cutoff)
        if self.agnesi is not None:
            radii = self.covalent_radii.to(lengths.dtype)
            pair_radius = 0.5 * (radii[edge_types[0]] + radii[edge_types[1]])[:, None]
            lengths = agnesi_transform(lengths, pair_radius, *self.agnesi)
        radial = bessel_basis(lengths, self.r_max, self.num_radial_basis)
        if not self.apply_cutoff:
            return spherical_harmonics(self.max_ell, vectors), torch.cat([radial, envelope], 1)
        return spherical_harmonics(self.max_ell, vectors), radial * envelope


def split_envelope(
    edge_radial: torch.Tensor, apply_cutoff: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``EdgeEmbedding``'s radial features as (basis, envelope): with ``apply_cutoff`` the
    features themselves and None (the envelope is in them), else the basis and the last
    column (n_edges, 1)."""
    if apply_cutoff:
        return edge_radial, None
    return edge_radial[:, :-1], edge_radial[:, -1:]
