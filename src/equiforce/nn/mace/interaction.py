"""MACE interaction block: equivariant convolution over neighbours, plus species mixing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equiforce.kernels import make_channelwise_tp, make_linear
from equiforce.nn.edge_pairs import EdgePairs
from equiforce.nn.mace.embedding import split_envelope
from equiforce.nn.mace.layout import NODE_LAYOUT
from equiforce.nn.mace.mlp import RadialMLP
from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.irreps import Irreps


@dataclass(frozen=True)
class InteractionIrreps:
    """Resolved irreps of one interaction.

    Attributes:
        node_in: node features entering the block.
        edge_attrs: edge spherical harmonics.
        target: irreps of the message (input of the product block).
        skip_out: output of the residual self-connection (the layer's hidden irreps).
        edge: the up-projected features the convolution takes (mace-torch's ``edge_irreps``;
            None: ``node_in``).
    """

    node_in: Irreps
    edge_attrs: Irreps
    target: Irreps
    skip_out: Irreps
    edge: Irreps | None = None

    @property
    def up(self) -> Irreps:
        """The irreps ``linear_up`` maps the node features to: ``edge``, else ``node_in``."""
        return self.node_in if self.edge is None else self.edge


def neighbourhood_density(
    edge_density: torch.Tensor, receiver: torch.Tensor, n_nodes: int, rows: slice
) -> torch.Tensor:
    """Each receiver's sum of its edges' densities, the learnt normalisations' ``rho``.

    Args:
        edge_density: (n_edges, 1) one value per edge.
        receiver: (n_edges,) int64 node receiving each edge.
        n_nodes: nodes the receivers index.
        rows: the receivers' rows among the nodes.

    Returns:
        (rows' length, 1).
    """
    return edge_density.new_zeros(n_nodes, 1).index_add(0, receiver, edge_density)[rows]


class Interaction(nn.Module):
    """``message_i = Linear(sum_j TP(Linear(h_j), Y(r_ij), R(|r_ij|))) / avg_num_neighbors``,
    or with ``density`` divided by ``1 + sum_j tanh(d(r_ij)^2)`` instead: a learnt density of
    the neighbourhood, ``d`` a linear map of the radial features (e3nn's one-layer net), the
    envelope on the tanh where it follows the basis (mace-torch's
    ``RealAgnosticDensity[Residual]InteractionBlock``).

    ``R`` is a radial MLP producing one weight per TP path and channel. Species enter in one
    of two ways, as in mace-torch:

    * ``residual=False`` (``RealAgnosticInteractionBlock``): the message is mixed by a
      species-dependent linear map; no self-connection.
    * ``residual=True`` (``RealAgnosticResidualInteractionBlock``): a species-dependent
      linear map of the input features is returned as the self-connection ``sc``, added
      after the product block.

    Args:
        irreps: resolved irreps of the block.
        n_types: number of species.
        radial_sizes: radial MLP widths, input (number of radial basis functions) first,
            without the output layer.
        avg_num_neighbors: message normalisation.
        residual: self-connection variant (see above).
        generator: random source for the initial weights.
        apply_cutoff: the radial features carry the envelope (True), or it follows as their
            last column and multiplies the MLP's output (``embedding.split_envelope``).
        density: normalise by the learnt density (above) instead of ``avg_num_neighbors``.
    """

    def __init__(
        self,
        irreps: InteractionIrreps,
        n_types: int,
        radial_sizes: tuple[int, ...],
        avg_num_neighbors: float,
        residual: bool,
        generator: torch.Generator,
        apply_cutoff: bool = True,
        density: bool = False,
    ):
        super().__init__()
        self.irreps = irreps
        self.apply_cutoff = apply_cutoff
        self.avg_num_neighbors = avg_num_neighbors
        self.residual = residual
        layout = NODE_LAYOUT
        up = LinearDescriptor(irreps.node_in, irreps.up, layout=layout)
        self.linear_up = make_linear(up, generator)
        tp = ChannelwiseTPDescriptor(irreps.up, irreps.edge_attrs, irreps.target, layout)
        self.conv_tp = make_channelwise_tp(tp)
        self.radial_mlp = RadialMLP((*radial_sizes, tp.weight_numel), generator)
        linear = LinearDescriptor(tp.irreps_out, irreps.target, layout=layout)
        self.linear = make_linear(linear, generator)
        if residual:
            skip = LinearDescriptor(irreps.node_in, irreps.skip_out, n_types, layout)
        else:
            skip = LinearDescriptor(irreps.target, irreps.target, n_types, layout)
        self.skip = make_linear(skip, generator)
        # last: a model without it draws the same weights for everything else
        self.density_mlp = RadialMLP((radial_sizes[0], 1), generator) if density else None

    def forward(
        self,
        node_feats: torch.Tensor,
        atom_type: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_index: torch.Tensor,
        pairs: EdgePairs | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Compute messages.

        Args:
            node_feats: (n_atoms, node_in.dim).
            atom_type: (n_atoms,) int64.
            edge_attrs: (n_edges, edge_attrs.dim) SH of the sender -> receiver vector.
            edge_radial: (n_edges, n_radial) radial basis times envelope.
            edge_index: (2, n_edges) int64, ``[receiver, sender]``: messages flow from
                ``edge_index[1]`` to ``edge_index[0]``.
            pairs: the edges' bonds (``equiforce.nn.edge_pairs``), or None: the radial MLP
                then runs on every edge instead of once per bond.

        Returns:
            ``message`` (n_atoms, target.dim) and ``sc`` (n_atoms, skip_out.dim) or None.
        """
        up = self.linear_up(node_feats)
        return self.messages(
            up,
            node_feats,
            atom_type,
            edge_attrs,
            edge_radial,
            edge_index[1],
            edge_index[0],
            pairs=pairs,
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
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Messages onto a block of receivers, from up-projected node features.

        ``forward`` calls it on the whole graph; a chunk of a graph
        (``equiforce.nn.edge_chunks``) calls it on its local nodes, whose receivers are the
        rows ``first_row .. first_row + n_receivers - 1`` of ``up``.

        Args:
            up: (n_nodes, irreps.up.dim) ``linear_up`` of the features of every node the
                edges touch.
            node_feats: (n_receivers, node_in.dim) features of the receivers.
            atom_type: (n_receivers,) int64 species of the receivers.
            edge_attrs: (n_edges, edge_attrs.dim).
            edge_radial: (n_edges, n_radial).
            sender: (n_edges,) int64 row of ``up`` sending each message.
            receiver: (n_edges,) int64 row of ``up`` receiving it.
            first_row: row of ``up`` of the first receiver.
            pairs: bonds of these edges, or None (see ``forward``).
            up_type: (n_nodes,) species of the rows of ``up``: unused here (the
                non-linear block's ends' embeddings need them).

        Returns:
            ``message`` (n_receivers, target.dim) and ``sc`` (n_receivers, skip_out.dim) or
            None.
        """
        sc = self.skip(node_feats, atom_type) if self.residual else None
        if pairs is not None:  # a function of the length: the same on both edges of a bond
            edge_radial = pairs.gather(edge_radial)
        basis, envelope = split_envelope(edge_radial, self.apply_cutoff)
        weights = self.radial_mlp(basis, row_scale=envelope)
        if pairs is None:
            summed = self.conv_tp(up, edge_attrs, weights, sender, receiver)
        else:  # shared in place
            summed = self.conv_tp(up, edge_attrs, weights, sender, receiver, pairs.of_edge)
        n_receivers = node_feats.shape[0]
        rows = slice(first_row, first_row + n_receivers)
        if first_row != 0 or n_receivers != summed.shape[0]:
            summed = summed[rows]
        if self.density_mlp is None:
            message = self.linear(summed) / self.avg_num_neighbors
        else:
            density = torch.tanh(self.density_mlp(basis) ** 2)
            if envelope is not None:
                density = density * envelope
            if pairs is not None:  # one per bond: each edge its bond's
                density = density[pairs.of_edge]
            rho = neighbourhood_density(density, receiver, up.shape[0], rows)
            message = self.linear(summed) * (rho + 1).reciprocal()
        if not self.residual:
            message = self.skip(message, atom_type)
        return message, sc
