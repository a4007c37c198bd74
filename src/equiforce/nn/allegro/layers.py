"""The stack of Allegro layers acting on pairs (no message passing between atoms).

Layer ``k`` for pair (i, j) with centre i:

1. environment of i (density trick): ``env_i[u] = norm_i * sum_{j'} w_ij'[u, irrep] Y(r_ij')``,
   weights ``w`` from the pair's scalar latent, ``norm_i = 1 / sqrt(avg_num_neighbors)``;
2. tensor track: ``V_ij <- TP(V_ij, env_i)`` (``equiforce.o3.allegro_tp``), channel-wise;
3. scalar track (densely connected): ``x_ij^{k+1} = MLP([x^0, ..., x^k, scalars(V_ij)])``,
   whose extra outputs are the next layer's environment weights.

The output is the concatenation of every layer's scalar latents ``[x^0, ..., x^L]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from equiforce.kernels import make_allegro_tp
from equiforce.nn.allegro.mlp import AllegroMLP, WeightedChannels
from equiforce.o3.allegro_tp import AllegroTPDescriptor
from equiforce.o3.irreps import Irreps


class AllegroLayers(nn.Module):
    """All Allegro layers of a model.

    Parameters: ``first_projection`` (linear ``AllegroMLP``: two-body latent -> latent +
    first environment weights), ``tps.{k}`` (executors of ``AllegroTPDescriptor``),
    ``latents.{k}`` (``AllegroMLP``).

    Args:
        irreps_chain: ``num_layers + 1`` tensor-track irreps (``allegro_layer_irreps``);
            the first must equal ``irreps_sh``.
        irreps_sh: edge spherical-harmonic irreps.
        latent_dim: scalar features per pair per layer (``num_scalar_features``).
        mul: tensor features per pair (``num_tensor_features``).
        latent_hidden: hidden widths of each layer's latent MLP.
        nonlinearity: of the latent MLPs.
        path_channel_coupling: TP weights per (channel, path) instead of per path.
        generator: random source for the initial weights.
        backend: kernel backend of the tensor products ("auto": the fast one on CPU).
    """

    def __init__(
        self,
        irreps_chain: Sequence[Irreps],
        irreps_sh: Irreps,
        latent_dim: int,
        mul: int,
        latent_hidden: tuple[int, ...],
        nonlinearity: str | None,
        path_channel_coupling: bool,
        generator: torch.Generator,
        backend: str = "auto",
    ):
        super().__init__()
        irreps_sh = Irreps(irreps_sh)
        if Irreps(irreps_chain[0]) != irreps_sh:
            raise ValueError(f"first layer input {irreps_chain[0]} must be {irreps_sh}")
        self.latent_dim = latent_dim
        self.num_layers = len(irreps_chain) - 1
        self.weighter = WeightedChannels(irreps_sh, mul)
        env_numel = self.weighter.weight_numel
        self.first_projection = AllegroMLP((latent_dim, latent_dim + env_numel), None, generator)
        self.tps = nn.ModuleList()
        self.latents = nn.ModuleList()
        for k in range(self.num_layers):
            descriptor = AllegroTPDescriptor(
                irreps_chain[k], irreps_sh, irreps_chain[k + 1], mul, path_channel_coupling
            )
            if descriptor.irreps_out[0].ir != (0, 1):
                raise ValueError("every layer's tensor-product output must start with 0e")
            self.tps.append(make_allegro_tp(descriptor, generator, backend))
            n_out = latent_dim + (env_numel if k < self.num_layers - 1 else 0)
            sizes = (latent_dim * (k + 1) + mul, *latent_hidden, n_out)
            self.latents.append(AllegroMLP(sizes, nonlinearity, generator))

    def forward(
        self,
        latent: torch.Tensor,
        edge_sh: torch.Tensor,
        tensor_features: torch.Tensor,
        centre: torch.Tensor,
        node_norm: torch.Tensor,
    ) -> torch.Tensor:
        """Run every layer.

        Args:
            latent: (n_edges, latent_dim) two-body scalar latent.
            edge_sh: (n_edges, irreps_sh.dim) edge spherical harmonics.
            tensor_features: (n_edges, mul, irreps_sh.dim) initial tensor features.
            centre: (n_edges,) int64 centre atom of each pair.
            node_norm: (n_atoms, 1) environment normalisation per atom.

        Returns:
            (n_edges, latent_dim * (num_layers + 1)) scalar features of every layer.
        """
        # split, not sliced: the backward of two slices zero-fills two full-size gradients
        sizes = [self.latent_dim, self.weighter.weight_numel]
        scalar, env_weights = self.first_projection(latent).split(sizes, dim=-1)
        scalars = [scalar]
        n_atoms, dim = node_norm.shape[0], edge_sh.shape[1]
        for k, (tp, mlp) in enumerate(zip(self.tps, self.latents, strict=True)):
            # environment sums atom-major, (n_atoms, dim, mul), viewed as (n_atoms, mul, dim)
            env_edges = self.weighter.edge_major(edge_sh, env_weights)
            env = env_edges.new_zeros(n_atoms, env_edges.shape[1])
            env = (env.index_add(0, centre, env_edges) * node_norm).view(
                n_atoms, dim, self.weighter.mul
            )
            tensor_features = tp(tensor_features, env.transpose(1, 2), centre)
            out = mlp(torch.cat([*scalars, tensor_features[:, :, 0]], dim=-1))
            if k < self.num_layers - 1:
                scalar, env_weights = out.split(sizes, dim=-1)
            else:
                scalar = out
            scalars.append(scalar)
        return torch.cat(scalars, dim=-1)
