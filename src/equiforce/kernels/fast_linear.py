"""Fast executor of ``LinearDescriptor``: one matrix product per output irrep.

Same parameter (``weight``, e3nn's flat layout) as ``reference.Linear``. For every output
block, the input blocks of the same irrep are stacked along the channel axis and their
weight blocks (normalisation folded in) along the input axis, so the block is a single
``(n * dim, sum mul_in) @ (sum mul_in, mul_out)`` GEMM. With per-species weights the GEMM
produces every species' output, ``(sum mul_in, n_types * mul_out)``, and each row keeps its
own species' (a dense product instead of a per-atom gathered weight tensor; ``n_types`` times
the multiply-adds, which are few at node level).

In the ``ir_mul`` layout (``descriptor.layout``) a block already is ``(n, dim, mul)``: its
rows go into the GEMM's operand by one contiguous copy (none for a lone scalar block) and the
GEMM's output is the output block as it lies, with no transposes either way.

Support: any device and floating dtype; any grad order; deterministic; plain torch ops
(``torch.compile``/``torch.export`` friendly). ``math_dtype`` (None: the weight's) is the
dtype of the products; the output comes back in the input dtype.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from equiforce.kernels import split_cat
from equiforce.o3.descriptors import LinearDescriptor
from equiforce.o3.irreps import flatten_block, unflatten_block

__all__ = ["FastLinear"]


class FastLinear(nn.Module):
    """Equivariant linear map, one GEMM per output irrep (see module docstring).

    Parameters: ``weight`` (weight_numel,) float64, N(0, 1), layout of ``reference.Linear``.

    Args:
        descriptor: what to compute.
        generator: random source for the initial weights.
        math_dtype: dtype of the products (None: the weight's).
    """

    op_class: ClassVar[str] = "linear"  # equiforce.precision.OP_CLASSES

    def __init__(
        self,
        descriptor: LinearDescriptor,
        generator: torch.Generator,
        math_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        weight = torch.randn(descriptor.weight_numel, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(weight)
        self._in_dims = [mul * ir.dim for mul, ir in descriptor.irreps_in]
        self._paths_into = [
            [p for p in descriptor.paths if p.i_out == i_out]
            for i_out in range(len(descriptor.irreps_out))
        ]
        # one normalisation per output block (1 / sqrt(fan_in)), applied once to its weights
        self._scales = [paths[0].scale if paths else 0.0 for paths in self._paths_into]
        if any(p.scale != self._scales[p.i_out] for p in descriptor.paths):
            raise ValueError("paths into one output irrep must share their normalisation")

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the map.

        Args:
            x: (n, irreps_in.dim) in ``descriptor.layout``.
            atom_type: (n,) int64 species index; required iff ``n_types > 0``.

        Returns:
            (n, irreps_out.dim) in ``descriptor.layout``.
        """
        desc = self.descriptor
        io_dtype = x.dtype
        weight = self.weight.to(self.math_dtype or self.weight.dtype)
        x = x.to(weight.dtype)
        n = x.shape[0]
        blocks = x.split(self._in_dims, dim=1)
        types = max(desc.n_types, 1)
        outputs = []
        for (mul_out, ir), paths, scale in zip(
            desc.irreps_out, self._paths_into, self._scales, strict=True
        ):
            if not paths:
                outputs.append(x.new_zeros(n, mul_out * ir.dim))
                continue
            # (n * dim, sum mul_in): channels of every input block of this irrep, side by side
            # (a scalar block alone is a view: no copy)
            stacked = _cat(
                [unflatten_block(blocks[p.i_in], p.mul_in, ir.dim, desc.layout) for p in paths],
                dim=2,
            ).reshape(n * ir.dim, -1)
            size = types * mul_out
            w = _cat(
                [
                    weight[p.weight_offset : p.weight_offset + p.mul_in * size].view(p.mul_in, size)
                    for p in paths
                ],
                dim=0,
            )
            w = w * scale
            y = stacked @ w  # (n * dim, types * mul_out)
            if desc.n_types > 0:
                # row (atom, component, own species) of the (n * dim * types, mul_out) view:
                # a leading-axis index_select, whose backward is a cheap row index_add
                rows = (torch.arange(n * ir.dim, device=x.device) * types).reshape(n, ir.dim)
                rows = (rows + atom_type.reshape(n, 1)).reshape(-1)
                y = y.reshape(-1, mul_out).index_select(0, rows)
            outputs.append(flatten_block(y.view(n, ir.dim, mul_out), desc.layout))
        return split_cat.cat(outputs, dim=1).to(io_dtype)


def _cat(blocks: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``split_cat.cat``, or the block itself when there is one (no copy)."""
    return blocks[0] if len(blocks) == 1 else split_cat.cat(blocks, dim=dim)
