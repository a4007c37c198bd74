"""Reference executor (plain PyTorch) of ``equiforce.o3.allegro_tp.AllegroTPDescriptor``.

Faster backends must keep the parameter name ``weight`` and its shape
``descriptor.weight_shape``. Created in float64; ``.to(dtype)`` moves the weight and the
coupling buffer. Support: float32 and float64; any device; any grad order (forces and
force training need double backward); deterministic; plain tensor ops, so
``torch.compile`` and ``torch.export`` can trace it. ``math_dtype`` (None: the weight's) is
the dtype the contraction runs in; outputs come back in the input dtype.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from equiforce.kernels.constants import ExactConstants
from equiforce.o3.allegro_tp import AllegroTPDescriptor

__all__ = ["AllegroTensorProduct", "initial_weight"]


def initial_weight(descriptor: AllegroTPDescriptor, generator: torch.Generator) -> torch.Tensor:
    """Initial path weights shared by every backend.

    Returns:
        ``descriptor.weight_shape`` float64, uniform on ``[-sqrt(3), sqrt(3)]`` (unit variance).
    """
    weight = torch.rand(descriptor.weight_shape, generator=generator, dtype=torch.float64)
    return (2.0 * weight - 1.0) * math.sqrt(3.0)


class AllegroTensorProduct(ExactConstants):
    """Gather the centre's environment, then the channel-wise Allegro tensor product.

    Parameters: ``weight`` ``descriptor.weight_shape`` float64, uniform on
    ``[-sqrt(3), sqrt(3)]`` (unit variance).
    Buffers: ``coupling`` (n_paths, dim1 * dim2, dim_out), not saved (rebuilt from the
    descriptor).

    Args:
        descriptor: what to compute.
        generator: random source for the initial weights.
        math_dtype: dtype of the contraction (None: the weight's).
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(
        self,
        descriptor: AllegroTPDescriptor,
        generator: torch.Generator,
        math_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        self.weight = nn.Parameter(initial_weight(descriptor, generator))
        coupling = descriptor.coupling()
        n_paths, dim1, dim2, dim_out = coupling.shape
        self.register_constant("coupling", coupling.reshape(n_paths, dim1 * dim2, dim_out))

    def forward(self, x1: torch.Tensor, env: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Tensor product of pair features with the environment of each pair's centre.

        Args:
            x1: (n_edges, mul, irreps_in1.dim) pair tensor features.
            env: (n_atoms, mul, irreps_in2.dim) environment embedding per atom.
            centre: (n_edges,) int64 centre atom of each pair.

        Returns:
            (n_edges, mul, irreps_out.dim).
        """
        io_dtype = x1.dtype
        weight = self.weight.to(self.math_dtype or self.weight.dtype)
        coupling = self.coupling.to(weight.dtype)
        x2 = env.to(weight.dtype).index_select(0, centre)
        x1 = x1.to(weight.dtype)
        outer = (x1.unsqueeze(-1) * x2.unsqueeze(-2)).flatten(-2)  # (n_edges, mul, d1 * d2)
        if self.descriptor.path_channel_coupling:
            # (mul, d1 * d2, d_out): one effective coupling per channel
            mixed = torch.einsum("up,pak->uak", weight, coupling)
            return torch.einsum("eua,uak->euk", outer, mixed).to(io_dtype)
        mixed = torch.einsum("p,pak->ak", weight, coupling)
        return (outer @ mixed).to(io_dtype)
