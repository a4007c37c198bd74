"""Per-atom energy readouts from invariant (0e) node features."""

from __future__ import annotations

import torch
from torch import nn

from equiforce.kernels import make_linear
from equiforce.nn.mace.layout import NODE_LAYOUT
from equiforce.nn.mace.mlp import ScaledSiLU
from equiforce.o3.descriptors import LinearDescriptor
from equiforce.o3.irreps import Irreps, scalar_irreps


class LinearReadout(nn.Module):
    """Energy ``= Linear(h)`` (only the 0e channels contribute).

    Args:
        irreps_in: node-feature irreps.
        generator: random source for the initial weights.
    """

    def __init__(self, irreps_in: Irreps, generator: torch.Generator):
        super().__init__()
        readout = LinearDescriptor(irreps_in, scalar_irreps(1), layout=NODE_LAYOUT)
        self.linear = make_linear(readout, generator)

    def forward(self, node_feats: torch.Tensor) -> torch.Tensor:
        """(n_atoms, irreps_in.dim) -> (n_atoms,) model dtype, eV before scaling."""
        return self.linear(node_feats)[:, 0]


class MLPReadout(nn.Module):
    """Energy ``= Linear(ScaledSiLU(Linear(h)))`` through ``hidden`` scalars.

    Args:
        irreps_in: node-feature irreps.
        hidden: width of the hidden layer (MACE's ``MLP_irreps = 16x0e``).
        generator: random source for the initial weights.
    """

    def __init__(self, irreps_in: Irreps, hidden: int, generator: torch.Generator):
        super().__init__()
        hidden_layer = LinearDescriptor(irreps_in, scalar_irreps(hidden), layout=NODE_LAYOUT)
        self.linear_1 = make_linear(hidden_layer, generator)
        self.activation = ScaledSiLU()
        self.linear_2 = make_linear(
            LinearDescriptor(scalar_irreps(hidden), scalar_irreps(1)), generator
        )

    def forward(self, node_feats: torch.Tensor) -> torch.Tensor:
        """(n_atoms, irreps_in.dim) -> (n_atoms,) model dtype, eV before scaling."""
        return self.linear_2(self.activation(self.linear_1(node_feats)))[:, 0]
