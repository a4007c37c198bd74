"""The stack of Allegro layers acting on pairs (no message passing between atoms).

Layer ``k`` for pair (i, j) with centre i:

1. environment of i (density trick): ``env_i[u] = norm_i * sum_{j'} w_ij'[u, irrep] Y(r_ij')``,
   weights ``w`` from the pair's scalar latent, ``norm_i = 1 / sqrt(avg_num_neighbors)``;
2. tensor track: ``V_ij <- TP(V_ij, env_i)`` (``equiforce.o3.allegro_tp``), channel-wise;
3. scalar track (densely connected): ``x_ij^{k+1} = MLP([x^0, ..., x^k, scalars(V_ij)])``,
   whose extra outputs are the next layer's environment weights.

The model's readout reads the concatenation of every layer's scalar latents
``[x^0, ..., x^L]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from equiforce.kernels import make_allegro_tp
from equiforce.nn.allegro.mlp import AllegroMLP, EdgeMajorWeightedChannels
from equiforce.o3.allegro_tp import AllegroTPDescriptor
from equiforce.o3.irreps import Irreps


class AllegroLayers(nn.Module):
    """All Allegro layers of a model, run one at a time (``start``, then ``layer(k, ...)``).

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
        self.weighter = EdgeMajorWeightedChannels(irreps_sh, mul)
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

    def start(self, latent: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Layer-0 scalars ``[x^0]`` and the first environment weights.

        Args:
            latent: (n_edges, latent_dim) two-body scalar latent.

        Returns:
            ``[x^0]`` ((n_edges, latent_dim)) and (n_edges, weight_numel) weights.
        """
        # split, not sliced: the backward of two slices zero-fills two full-size gradients
        scalar, env_weights = self.first_projection(latent).split(self._sizes(), dim=-1)
        return [scalar], env_weights

    def layer(
        self,
        index: int,
        scalars: list[torch.Tensor],
        env_weights: torch.Tensor,
        tensor_features: torch.Tensor,
        edge_sh: torch.Tensor,
        centre: torch.Tensor,
        node_norm: torch.Tensor,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """Run layer ``index`` (0-based); ``start`` gives the first inputs.

        Args:
            index: the layer.
            scalars: ``[x^0, ..., x^index]``, each (n_edges, latent_dim).
            env_weights: (n_edges, weight_numel) this layer's environment weights.
            tensor_features: (n_edges, mul, irreps dim) the tensor track.
            edge_sh: (n_edges, irreps_sh.dim) edge spherical harmonics.
            centre: (n_edges,) int64 centre atom of each pair.
            node_norm: (n_atoms, 1) environment normalisation per atom.

        Returns:
            ``scalars`` with ``x^{index+1}`` appended, the next layer's environment weights
            (None after the last layer) and the new tensor track.
        """
        n_atoms, dim = node_norm.shape[0], edge_sh.shape[1]
        # environment sums atom-major, (n_atoms, dim, mul), viewed as (n_atoms, mul, dim)
        env = self.weighter.environment(edge_sh, env_weights, centre, n_atoms)
        env = (env * node_norm).view(n_atoms, dim, self.weighter.mul)
        tensor_features = self.tps[index](tensor_features, env.transpose(1, 2), centre)
        # the MLP's first layer takes the blocks: no pair-sized concatenation (scaled_mlp_forward)
        out = self.latents[index]([*scalars, tensor_features[:, :, 0]])
        if index < self.num_layers - 1:
            scalar, next_weights = out.split(self._sizes(), dim=-1)
        else:
            scalar, next_weights = out, None
        return [*scalars, scalar], next_weights, tensor_features

    def _sizes(self) -> list[int]:
        """Widths of an MLP output holding scalars and environment weights."""
        return [self.latent_dim, self.weighter.weight_numel]
