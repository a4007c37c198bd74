"""MACE's non-linear residual interaction: mace-torch's
``RealAgnosticResidualNonLinearInteractionBlock``, the block of its MH foundation models.

Where the residual block weighs each edge's tensor product by a radial MLP of the edge's
length alone and divides the summed messages by the average neighbour count, this one

* feeds its radial MLP (``LayerNormMLP``: linear layers with biases, LayerNorm and SiLU, as
  eSEN/FairChem's) the radial basis together with a learnt embedding of the sender's and the
  receiver's species (so the two directions of a bond differ: it runs once per edge);
* normalises each atom's summed messages by a learnt density,
  ``linear_1(m) / (beta * rho + alpha)``, ``rho_i = sum_j tanh(d(r_ij)^2)``, d a second such
  MLP of one output, alpha and beta trained (20 and 0 at the start);
* adds a linear residual of the up-projected features (``linear_res``), passes the result
  through a gated non-linearity (``Gate``: SiLU on the scalars, sigmoid gates on the higher
  irreps, e3nn's normalisation) and a last linear map (``linear_2``);
* returns a species-independent self-connection (``skip``: a plain linear map of the input
  features to the layer's hidden irreps), added after the product block as the residual
  block's.

All features are in ``NODE_LAYOUT`` (``ir_mul``); the weights are layout-free and load from
mace-torch unchanged (``equiforce.interop.mace_torch``).
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from equiforce.kernels import make_channelwise_tp, make_linear
from equiforce.nn.edge_pairs import EdgePairs
from equiforce.nn.mace.embedding import split_envelope
from equiforce.nn.mace.interaction import InteractionIrreps, neighbourhood_density
from equiforce.nn.mace.layout import NODE_LAYOUT
from equiforce.nn.mace.mlp import normalized_silu_scale
from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.irreps import Irreps, flatten_block, unflatten_block

DENSITY_HIDDEN = 64  # mace-torch's density MLP: one hidden layer of 64
ALPHA_START, BETA_START = 20.0, 0.0  # the density normalisation's initial constants


def normalized_sigmoid_scale() -> float:
    """``1 / sqrt(E[sigmoid(z)^2])`` for ``z ~ N(0, 1)`` (200-point Gauss-Hermite; e3nn's
    normalize2mom estimates it by Monte Carlo, the converter absorbs the difference)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    second_moment = np.sum(weights / (1.0 + np.exp(-nodes)) ** 2) / math.sqrt(2.0 * math.pi)
    return float(1.0 / math.sqrt(second_moment))


class LayerNormMLP(nn.Module):
    """``Linear -> LayerNorm -> SiLU`` per hidden layer and a last ``Linear``, with biases:
    mace-torch's ``RadialMLP``.

    Parameters: ``layers.{k}.weight`` (sizes[k+1], sizes[k]) and ``.bias``,
    ``norms.{k}.weight`` / ``.bias`` (sizes[k+1],), float64 until cast.

    Precision: the linear layers run in the dtype of their input (weights and biases cast
    to it), the LayerNorms and SiLUs in at least float32 (as ``torch.autocast`` runs
    ``layer_norm``); the block that owns the net chooses that dtype
    (``NonLinearInteraction``'s ``math_dtype``).

    Args:
        sizes: widths, input first, at least two entries.
        generator: random source (PyTorch's default initialisation of ``nn.Linear``).
    """

    def __init__(self, sizes: Sequence[int], generator: torch.Generator):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
        self.sizes = tuple(int(size) for size in sizes)
        self.layers = nn.ModuleList()
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            layer = nn.Linear(fan_in, fan_out, dtype=torch.float64)
            bound = 1 / math.sqrt(fan_in)
            with torch.no_grad():
                for parameter in (layer.weight, layer.bias):
                    uniform = torch.rand(parameter.shape, generator=generator, dtype=torch.float64)
                    parameter.copy_((2 * uniform - 1) * bound)
            self.layers.append(layer)
        self.norms = nn.ModuleList(
            nn.LayerNorm(size, dtype=torch.float64) for size in self.sizes[1:-1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, sizes[0]) -> (n, sizes[-1]), in the dtype of ``x``."""
        first = self.layers[0]
        h = nn.functional.linear(x, first.weight.to(x.dtype), first.bias.to(x.dtype))
        return self.after_first_layer(h)

    def after_first_layer(
        self, h: torch.Tensor, row_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The net from its first layer's output ``h`` (n, sizes[1]) on (a caller that forms
        that layer's product its own way: ``NonLinearInteraction.edge_mlps``).

        Args:
            h: (n, sizes[1]) output of ``layers[0]``; its dtype is the layers'.
            row_scale: (n, 1) factors of the output's rows, or None: applied to the last
                layer's input with a column of the factors against its bias (``[h s, s] @
                [W^T; b] = (h W^T + b) s``), a product of the hidden width rather than of
                the output's (the envelope on ~1000 radial weights per edge).

        Returns:
            (n, sizes[-1]), the dtype of ``h``.
        """
        dtype = h.dtype
        normed = torch.promote_types(dtype, torch.float32)
        for norm, layer in zip(self.norms, self.layers[1:], strict=True):
            h = nn.functional.layer_norm(
                h.to(normed),
                norm.normalized_shape,
                norm.weight.to(normed),
                norm.bias.to(normed),
                norm.eps,
            )
            h = nn.functional.silu(h).to(dtype)
            weight, bias = layer.weight.to(dtype), layer.bias.to(dtype)
            if row_scale is not None and layer is self.layers[-1]:
                scale = row_scale.to(dtype)
                return torch.cat([h * scale, scale], dim=1) @ torch.cat([weight.T, bias[None]])
            h = nn.functional.linear(h, weight, bias)
        return h if row_scale is None else h * row_scale.to(dtype)


class Gate(nn.Module):
    """e3nn's gated non-linearity on ``NODE_LAYOUT`` features: input ``(S + G) x 0e +
    gated``, output ``S x 0e + gated``: the first S scalars through SiLU, the next G through
    sigmoid as gates, gate k scaling multiplicity k of the gated (l > 0) irreps in order,
    each activation normalised to unit second moment as e3nn's ``normalize2mom``.

    Args:
        target: the output irreps, its scalars first (``S x 0e + ...``, MACE's interaction
            target: sorted).
    """

    def __init__(self, target: Irreps):
        super().__init__()
        target = Irreps(target)
        (n_scalars, first), *gated = list(target)
        if first.l != 0 or first.p != 1 or any(ir.l == 0 for _, ir in gated):
            raise ValueError(f"gate target {target}: scalars (0e) first, then l > 0 irreps")
        self.n_scalars = n_scalars
        self.n_gates = sum(mul for mul, _ in gated)
        self.irreps_out = target
        self.irreps_in = Irreps([(n_scalars + self.n_gates, (0, 1)), *gated])
        self.gated = [(mul, ir.dim) for mul, ir in gated]
        self.scalar_scale = normalized_silu_scale()
        self.gate_scale = normalized_sigmoid_scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, irreps_in.dim) -> (n, irreps_out.dim)."""
        scalars = nn.functional.silu(x[:, : self.n_scalars]) * self.scalar_scale
        start = self.n_scalars + self.n_gates
        gates = torch.sigmoid(x[:, self.n_scalars : start]) * self.gate_scale
        parts, used = [scalars], 0
        for mul, dim in self.gated:
            block = unflatten_block(x[:, start : start + mul * dim], mul, dim, NODE_LAYOUT)
            gated = block * gates[:, None, used : used + mul]
            parts.append(flatten_block(gated, NODE_LAYOUT))
            start, used = start + mul * dim, used + mul
        return torch.cat(parts, dim=1)


class NonLinearInteraction(nn.Module):
    """The non-linear residual interaction (module docstring), with ``Interaction``'s
    interface (``linear_up``, ``forward``, ``messages``).

    Precision: op class ``mlp``, for its own arithmetic, the edge MLPs (``edge_mlps``: the
    species-pair tables and both ``LayerNormMLP``s): ``math_dtype`` (None: the parameter
    dtype; set by ``equiforce.precision.apply_policy``) is their linear layers' dtype, their
    outputs cast back to the features' dtype. The linear maps and the convolution are blocks
    of their own (``linear``, ``tensor_product``).

    Args:
        irreps: resolved irreps of the block (``irreps.up``: mace-torch's ``edge_irreps``).
        n_types: number of species.
        radial_sizes: radial basis size first, then the hidden widths of the radial MLP.
        generator: random source for the initial weights.
        apply_cutoff: the radial features carry the envelope (True: the block is then
            discontinuous at the cutoff, its MLPs' biases and the species embeddings being
            non-zero there), or it follows as their last column and multiplies the MLPs'
            outputs (False, mace-torch's ``apply_cutoff=False``: smooth).
    """

    op_class: ClassVar[str] = "mlp"
    residual = True
    uses_edge_pairs = False  # the radial MLP sees the ends' species: once per edge

    def __init__(
        self,
        irreps: InteractionIrreps,
        n_types: int,
        radial_sizes: tuple[int, ...],
        generator: torch.Generator,
        apply_cutoff: bool = False,
    ):
        super().__init__()
        self.irreps = irreps
        self.apply_cutoff = apply_cutoff
        layout = NODE_LAYOUT
        channels = irreps.node_in.count((0, 1))
        self.linear_up = make_linear(
            LinearDescriptor(irreps.node_in, irreps.up, layout=layout), generator
        )
        # e3nn Linear(n_types x 0e -> channels x 0e) of the one-hot species: a row per species
        self.source_embedding = nn.Parameter(
            1e-3 * (2 * torch.rand(n_types, channels, generator=generator, dtype=torch.float64) - 1)
        )
        self.target_embedding = nn.Parameter(
            1e-3 * (2 * torch.rand(n_types, channels, generator=generator, dtype=torch.float64) - 1)
        )
        tp = ChannelwiseTPDescriptor(irreps.up, irreps.edge_attrs, irreps.target, layout)
        self.conv_tp = make_channelwise_tp(tp)
        edge_features = radial_sizes[0] + 2 * channels
        self.radial_mlp = LayerNormMLP(
            (edge_features, *radial_sizes[1:], tp.weight_numel), generator
        )
        self.density_mlp = LayerNormMLP((edge_features, DENSITY_HIDDEN, 1), generator)
        self.gate = Gate(irreps.target)
        nonlinear_in = self.gate.irreps_in
        self.linear_res = make_linear(
            LinearDescriptor(irreps.up, nonlinear_in, layout=layout), generator
        )
        self.linear_1 = make_linear(
            LinearDescriptor(tp.irreps_out, nonlinear_in, layout=layout), generator
        )
        self.linear_2 = make_linear(
            LinearDescriptor(irreps.target, irreps.target, layout=layout), generator
        )
        self.skip = make_linear(
            LinearDescriptor(irreps.node_in, irreps.skip_out, layout=layout), generator
        )
        self.alpha = nn.Parameter(torch.tensor(ALPHA_START, dtype=torch.float64))
        self.beta = nn.Parameter(torch.tensor(BETA_START, dtype=torch.float64))
        self.math_dtype: torch.dtype | None = None

    def forward(
        self,
        node_feats: torch.Tensor,
        atom_type: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_index: torch.Tensor,
        pairs: EdgePairs | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages and self-connection of every atom (``Interaction.forward``'s arguments;
        ``pairs`` is ignored: the MLP runs per edge)."""
        return self.messages(
            self.linear_up(node_feats),
            node_feats,
            atom_type,
            edge_attrs,
            edge_radial,
            edge_index[1],
            edge_index[0],
            up_type=atom_type,
        )

    def messages(
        self,
        up: torch.Tensor,
        node_feats: torch.Tensor,
        atom_type: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_radial: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        first_row: int = 0,
        pairs: EdgePairs | None = None,
        up_type: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Interaction.messages`` for this block.

        Args:
            up_type: (n_nodes,) int64 species of the rows of ``up`` (the ends' embeddings
                need them; required).
            (the others as ``Interaction.messages``; ``pairs`` is ignored.)

        Returns:
            ``message`` (n_receivers, target.dim) and ``sc`` (n_receivers, skip_out.dim).
        """
        if up_type is None:
            raise ValueError("the non-linear interaction needs the species of every node")
        n_receivers = node_feats.shape[0]
        rows = slice(first_row, first_row + n_receivers)
        weights, density = self.edge_mlps(edge_radial, up_type[sender], up_type[receiver])
        summed = self.conv_tp(up, edge_attrs, weights, sender, receiver)
        rho = neighbourhood_density(density, receiver, up.shape[0], rows)
        # times the reciprocal: a (n, 1) factor, whose gradients (and theirs, in training)
        # stay (n, 1) where a division passes over the (n, features) quotient (op profile of
        # a training step, batch of 5 AcAc: 11.4 -> 8.6 ms on node rows)
        message = self.linear_1(summed[rows]) * (rho * self.beta + self.alpha).reciprocal()
        message = self.gate(message + self.linear_res(up[rows]))
        return self.linear_2(message), self.skip(node_feats)

    def edge_mlps(
        self, edge_radial: torch.Tensor, sender_type: torch.Tensor, receiver_type: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both MLPs of every edge on ``[basis, source_embedding[sender],
        target_embedding[receiver]]``, their first layers formed as one product of the basis
        plus a row per (sender, receiver) species pair: the embeddings' columns (two thirds
        of the input at 128 channels) never pass through a per-edge product, nor their
        gradient.

        Args:
            edge_radial: (n_edges, n_radial) ``EdgeEmbedding``'s radial features.
            sender_type, receiver_type: (n_edges,) int64 species of the edges' ends.

        Returns:
            ``weights`` (n_edges, conv_tp.weight_numel) and ``density`` (n_edges, 1), the
            envelope applied (``apply_cutoff`` false).
        """
        basis, envelope = split_envelope(edge_radial, self.apply_cutoff)
        mlps = (self.radial_mlp, self.density_mlp)
        dtype = self.math_dtype or self.source_embedding.dtype
        first = torch.cat([mlp.layers[0].weight for mlp in mlps]).to(dtype)  # (hidden, in)
        n_types, channels = self.source_embedding.shape
        on_basis, on_source, on_target = first.split([basis.shape[1], channels, channels], 1)
        scale = 1 / math.sqrt(n_types)  # e3nn's fan-in normalisation of the embeddings
        source = (self.source_embedding * scale).to(dtype) @ on_source.T  # (n_types, hidden)
        target = (self.target_embedding * scale).to(dtype) @ on_target.T
        bias = torch.cat([mlp.layers[0].bias for mlp in mlps]).to(dtype)
        pair_rows = (source[:, None] + target[None] + bias).flatten(0, 1)
        pair = sender_type * n_types + receiver_type
        hidden = torch.addmm(pair_rows[pair], basis.to(dtype), on_basis.T)
        radial_hidden, density_hidden = hidden.split([mlp.sizes[1] for mlp in mlps], 1)
        weights = self.radial_mlp.after_first_layer(radial_hidden, row_scale=envelope)
        density = torch.tanh(self.density_mlp.after_first_layer(density_hidden) ** 2)
        weights, density = weights.to(edge_radial.dtype), density.to(edge_radial.dtype)
        return weights, density if envelope is None else density * envelope
