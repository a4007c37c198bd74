"""MACE product block: symmetric contraction (many-body basis), linear, self-connection."""

from __future__ import annotations

import torch
from torch import nn

from equiforce.kernels import make_linear, make_symmetric_contraction
from equiforce.nn.mace.layout import NODE_LAYOUT
from equiforce.o3.descriptors import LinearDescriptor
from equiforce.o3.irreps import Irreps
from equiforce.o3.symmetric import SymmetricContractionDescriptor


class Product(nn.Module):
    """``h = Linear(SymmetricContraction(message, species)) + sc``.

    Args:
        irreps_in: message irreps, ``C x ir`` for each coupling irrep.
        irreps_out: hidden irreps of the layer, same ``C``.
        correlation: polynomial degree of the contraction (body order - 1).
        n_types: number of species.
        generator: random source for the initial weights.
    """

    def __init__(
        self,
        irreps_in: Irreps,
        irreps_out: Irreps,
        correlation: int,
        n_types: int,
        generator: torch.Generator,
    ):
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        descriptor = SymmetricContractionDescriptor(irreps_in, irreps_out, correlation, NODE_LAYOUT)
        self.num_channels = descriptor.num_channels
        self.contraction = make_symmetric_contraction(descriptor, n_types, generator)
        linear = LinearDescriptor(irreps_out, irreps_out, layout=NODE_LAYOUT)
        self.linear = make_linear(linear, generator)

    def forward(
        self, message: torch.Tensor, atom_type: torch.Tensor, sc: torch.Tensor | None
    ) -> torch.Tensor:
        """Update node features.

        Args:
            message: (n_atoms, irreps_in.dim), ``NODE_LAYOUT``.
            atom_type: (n_atoms,) int64.
            sc: (n_atoms, irreps_out.dim) self-connection or None.

        Returns:
            (n_atoms, irreps_out.dim), ``NODE_LAYOUT``.
        """
        # channel-last (n, d, C), handed over as its (n, C, d) view: the fast contraction's
        # kernels read (n, d, C) rows, so they need no copy of their own
        channel_last = message.reshape(message.shape[0], -1, self.num_channels)
        out = self.linear(self.contraction(channel_last.transpose(1, 2), atom_type))
        return out if sc is None else out + sc
