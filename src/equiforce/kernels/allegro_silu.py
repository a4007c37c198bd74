"""SiLU for Allegro's MLPs with C++ first and second derivatives (``csrc/allegro_silu.cpp``).

Force training differentiates every MLP twice. Torch's own ``silu`` backward under
``create_graph`` is ~6 elementwise ops and its double backward ~15 more, each one pass over an
``(n_edges, width)`` tensor (the largest cost of the tiny Allegro's training step on a
999-atom box after the matmuls). The C++ op saves ``s = sigmoid(x)`` in the forward and runs
the backward (``g * silu'(x)``) and the double backward (``gg * silu'(x)`` and
``gg * g * silu''(x)``) as one pass each, with their autograd nodes in C++; a double backward
run with grad mode on (a third derivative, e.g. a Hessian-vector loss) is written with
differentiable ATen ops instead, so every order is exact. Same values as
``torch.nn.functional.silu`` (float64 to rounding).

Used for CPU float32/float64 tensors that require grad, outside tracing (``torch.export``,
``torch.compile``, TorchScript see plain torch); everything else calls torch's ``silu``.
"""

from __future__ import annotations

import torch

from equiforce.kernels.extension import cpu_kernels

__all__ = ["silu", "silu_kernels"]

_SOURCES = ("allegro_silu.cpp",)


def silu_kernels():
    """The compiled module (``silu(x)``), or None where it cannot build."""
    return cpu_kernels(_SOURCES)


def _use_kernel(x: torch.Tensor) -> bool:
    return (
        type(x) is torch.Tensor  # not a FakeTensor / functional tensor of a tracer
        and x.requires_grad
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and silu_kernels() is not None
    )


def silu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)``, any shape; differentiable twice (C++) where the kernel applies."""
    if _use_kernel(x):
        return silu_kernels().silu(x)
    return torch.nn.functional.silu(x)
