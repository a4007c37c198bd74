"""``torch.cat`` whose backward is one ``split`` (``csrc/split_cat.cpp``, the kernel library's
``split_cat``), for block layouts.

The MACE fast executors assemble node features from per-irrep blocks with
concatenations. torch's cat backward cuts the gradient into one ``narrow`` per block; under
``create_graph`` (force training) every narrow's own backward, in the parameter backward,
zero-fills an array the size of the whole concatenation, copies its block in and adds the
arrays up. Here the backward is a single ``split_with_sizes``, whose backward is one cat: on
mace-128-l1's training step (AcAc x 5) the zero-fills, copies and additions of that pattern
were ~5% of the step (float32). Values and derivatives of every order are torch's.

Used where grad mode is on and a block requires grad, outside tracing (``torch.export``,
``torch.compile`` and ``make_fx`` see plain ``torch.cat``) and where the kernel library builds;
everything else calls ``torch.cat``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from equiforce.kernels.extension import kernel_ops, library_operator
from equiforce.kernels.tracing import traced

__all__ = ["cat"]


def _use_kernel(blocks: Sequence[torch.Tensor]) -> bool:
    return (
        len(blocks) > 1
        and torch.is_grad_enabled()
        and any(b.requires_grad for b in blocks)
        and not traced(*blocks)
        and kernel_ops() is not None
    )


def cat(blocks: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat(blocks, dim)``, differentiated by splitting where that applies (above)."""
    if _use_kernel(blocks):
        return library_operator("split_cat")(list(blocks), dim % blocks[0].dim())
    return torch.cat(list(blocks), dim=dim)
