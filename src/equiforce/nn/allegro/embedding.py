"""Allegro's two-body embedding: the initial scalar latent and tensor features of every pair.

For a pair (i, j) with ``x = r_ij / r_max(type_i, type_j)``:

* radial basis ``b_n(x) = sinc(n x) * n * envelope(x)``, ``n = 1..N`` (``sinc(t) =
  sin(pi t) / (pi t)``; nequip's normalised Bessel basis, ``= sin(n pi x) / (pi x)``);
* chemistry enters only through two small embeddings, multiplied elementwise with a linear
  projection of the basis: ``z = [E_centre(type_i), E_neighbour(type_j)] * (b @ W)``;
* the scalar latent is ``MLP(z)``, and the tensor features are the edge spherical
  harmonics weighted per channel and per irrep by a linear map of the latent.

The edge vectors arrive in float64 (the ``Potential``'s geometry boundary) and are cast
first: the geometry (lengths, basis, envelope, spherical harmonics) is evaluated in the model
dtype (float32 for a half-precision one), as nequip-allegro does. A float32 model rounds
everything after it to float32 anyway; its float64 geometry (``sinc`` in float64 alone ~4%
of the tiny model's call) bought no accuracy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.kernels.allegro_geometry import edge_geometry, use_geometry_kernel
from equiforce.nn.allegro.mlp import AllegroMLP, WeightedChannels
from equiforce.o3.irreps import Irreps
from equiforce.o3.radial import envelope
from equiforce.o3.spherical_harmonics import spherical_harmonics


def enveloped_bessel_basis(x: torch.Tensor, num_basis: int, p: int) -> torch.Tensor:
    """``sinc(n x) * n * envelope(x) = sin(n pi x) * envelope(x) / (pi x)``, ``n = 1..N``.

    Args:
        x: (n_edges, 1) normalised lengths ``r / r_max``, non-zero.
        num_basis: number of functions ``N``.
        p: order of the polynomial envelope (``equiforce.o3.radial.envelope``).

    Returns:
        (n_edges, num_basis), the dtype of ``x``; zero for ``x >= 1``.
    """
    n_pi = torch.arange(1, num_basis + 1, dtype=x.dtype, device=x.device) * math.pi
    return torch.sin(x * n_pi) * (envelope(x, p) * (x < 1.0) / (x * math.pi))


def unit_sh(l_max: int, vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Edge spherical harmonics (``equiforce.o3.spherical_harmonics``'s values).

    ``l_max <= 1`` in closed form, ``Y_0 = 1`` and ``Y_1 = sqrt(3) v / |v|`` (x, y, z order),
    from the lengths already computed; higher ``l_max`` through e3nn.

    Args:
        l_max: highest degree.
        vectors: (n_edges, 3), non-zero.
        lengths: (n_edges, 1) ``|vectors|``.

    Returns:
        (n_edges, (l_max + 1)^2), the dtype of ``vectors``.
    """
    if l_max > 1:
        return spherical_harmonics(l_max, vectors)
    ones = torch.ones_like(lengths)
    if l_max == 0:
        return ones
    return torch.cat((ones, vectors * (math.sqrt(3.0) / lengths)), dim=-1)


class AllegroEdgeEmbedding(nn.Module):
    """Pair scalar latent, edge spherical harmonics and initial pair tensor features.

    Parameters: ``centre_embed`` / ``neighbour_embed`` (n_types, embed_dim / 2), N(0, 1);
    ``basis_linear``, ``scalar_mlp`` and ``tensor_linear`` are ``AllegroMLP``s.
    ``inverse_r_max``: ``1 / r_max`` of every (centre, neighbour) type pair, row-major, kept
    as Python floats (it is in the spec), so no ``.to(dtype)`` rounds it.
    ``kernel_library`` (set by ``equiforce.kernels.use_backend``; True when built): the
    geometry runs as the kernel library's op where that applies, else in torch ops.

    Args:
        pair_r_max: (n_types, n_types) float64 cutoff per (centre, neighbour) type, Å.
        num_bessels: radial basis size ``N``.
        polynomial_cutoff_p: envelope order ``p``.
        embed_dim: width of the radial-chemical embedding (even).
        scalar_mlp_sizes: widths of the two-body MLP, ``embed_dim`` first, latent last.
        nonlinearity: of the two-body MLP.
        irreps_sh: edge spherical-harmonic irreps ``0e + 1o + ...``.
        num_tensor_features: tensor-track channels.
        generator: random source for the initial weights.
    """

    def __init__(
        self,
        pair_r_max: torch.Tensor,
        num_bessels: int,
        polynomial_cutoff_p: int,
        embed_dim: int,
        scalar_mlp_sizes: tuple[int, ...],
        nonlinearity: str | None,
        irreps_sh: Irreps,
        num_tensor_features: int,
        generator: torch.Generator,
    ):
        super().__init__()
        if embed_dim % 2 or scalar_mlp_sizes[0] != embed_dim:
            raise ValueError(f"embed_dim must be even and feed the MLP, got {embed_dim}")
        self.n_types = int(pair_r_max.shape[0])
        self.num_bessels = num_bessels
        self.polynomial_cutoff_p = polynomial_cutoff_p
        self.l_max = Irreps(irreps_sh).lmax
        self.inverse_r_max = tuple(pair_r_max.to(torch.float64).reciprocal().flatten().tolist())
        self.kernel_library = True
        half = (self.n_types, embed_dim // 2)
        self.centre_embed = nn.Parameter(
            torch.randn(half, generator=generator, dtype=torch.float64)
        )
        self.neighbour_embed = nn.Parameter(
            torch.randn(half, generator=generator, dtype=torch.float64)
        )
        self.basis_linear = AllegroMLP((num_bessels, embed_dim), None, generator)
        self.scalar_mlp = AllegroMLP(scalar_mlp_sizes, nonlinearity, generator)
        self.weighter = WeightedChannels(irreps_sh, num_tensor_features)
        self.tensor_linear = AllegroMLP(
            (scalar_mlp_sizes[-1], self.weighter.weight_numel), None, generator
        )

    def forward(
        self, edge_vec: torch.Tensor, edge_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed every pair.

        Args:
            edge_vec: (n_edges, 3) float64, Å, centre -> neighbour, non-zero.
            edge_types: (2, n_edges) int64 ``[type of centre, type of neighbour]``.

        Returns:
            ``latent`` (n_edges, latent dim), ``edge_sh`` (n_edges, irreps_sh.dim) and
            ``tensor_features`` (n_edges, num_tensor_features, irreps_sh.dim), model dtype.
        """
        dtype = self.centre_embed.dtype
        geometry = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        basis, edge_sh = self._geometry(edge_vec, edge_types, geometry)
        # [E_centre, E_neighbour] of each edge's pair of types
        species = torch.cat(
            (
                self.centre_embed.index_select(0, edge_types[0]),
                self.neighbour_embed.index_select(0, edge_types[1]),
            ),
            dim=-1,
        )
        latent = self.scalar_mlp(species * self.basis_linear(basis.to(dtype)))
        edge_sh = edge_sh.to(dtype)
        tensor_features = self.weighter(edge_sh, self.tensor_linear(latent))
        return latent, edge_sh, tensor_features

    def _geometry(
        self, edge_vec: torch.Tensor, edge_types: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial basis (n_edges, num_bessels) and harmonics (n_edges, (l_max + 1)^2) in ``dtype``.

        One C++ op where it applies (``kernels.allegro_geometry``), else the torch ops below
        (the same values to rounding).
        """
        if len(set(self.inverse_r_max)) == 1:
            inverse: torch.Tensor | float = self.inverse_r_max[0]
        else:
            pair = edge_types[0] * self.n_types + edge_types[1]
            table = torch.tensor(self.inverse_r_max, dtype=dtype, device=edge_vec.device)
            inverse = table.index_select(0, pair)
        if self.kernel_library and use_geometry_kernel(edge_vec, dtype, self.l_max):
            return edge_geometry(
                edge_vec, inverse, self.num_bessels, self.polynomial_cutoff_p, self.l_max, dtype
            )
        edge_vec = edge_vec.to(dtype)
        lengths = torch.linalg.norm(edge_vec, dim=-1, keepdim=True)
        x = lengths * (inverse.unsqueeze(-1) if isinstance(inverse, torch.Tensor) else inverse)
        basis = enveloped_bessel_basis(x, self.num_bessels, self.polynomial_cutoff_p)
        return basis, unit_sh(self.l_max, edge_vec, lengths)
