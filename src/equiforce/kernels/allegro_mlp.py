"""Allegro's scalar MLPs in C++ (``csrc/allegro_mlp.cpp``, the kernel library's
``allegro_scaled_mlp``).

``act(... act(x @ (W0 a0)) @ (W1 a1) ...) @ (W_L a_L)`` with ``act`` SiLU or the identity, ``x``
given as column blocks (``nn.scaled_mlp.scaled_mlp_forward``'s convention). In torch ops every
layer costs a weight scaling, a matmul and a SiLU from Python, and three autograd nodes; on one
molecule of the tiny Allegro (182 pairs, 32 wide: ~10 µs of arithmetic per matmul) those calls
cost more than the arithmetic. Two ways to run the net, the same values (float64 to rounding)
and every order of derivative exact:

* one autograd node (inference: forces without ``create_graph``). The forward keeps the
  pre-activations, their sigmoids and the activations; the backward runs the matmuls and one
  pass per SiLU (``g * silu'(x)``). Differentiated again, that backward recomputes the forward
  as recorded ops (below) and writes itself with differentiable ops.
* ``record``: the same ATen ops recorded one by one from C++ (training: force training's double
  backward walks the forward's own intermediates instead of recomputing them), SiLU as a C++
  node.

Either way SiLU's derivative ``g * silu'(x)`` is a C++ node whose own backward is one pass for
both of its gradients (torch's silu double backward is ~15 elementwise passes), and whose
backward with grad mode on (a third derivative) is differentiable ATen ops.

Used for CPU float32/float64 operands of one dtype outside tracing (``torch.export``,
``torch.compile`` and TorchScript see the torch ops) and outside ``torch.autocast``, where the
kernel library builds.
"""

from __future__ import annotations

from typing import Sequence

import torch

from equiforce.kernels.extension import kernel_ops, library_operator
from equiforce.kernels.tracing import traced

__all__ = ["scaled_mlp", "use_mlp_kernel"]


def use_mlp_kernel(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the op applies to an input block and a weight (module docstring).

    The op itself refuses (an error, never a silent cast) other blocks or weights of another
    dtype or device.
    """
    return (
        not traced(x)
        and x.dtype in (torch.float32, torch.float64)
        and x.device.type == "cpu"
        and weight.dtype == x.dtype
        and weight.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")  # autocast's casts are the torch ops'
        and kernel_ops() is not None
    )


def scaled_mlp(
    blocks: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    alphas: Sequence[float],
    silu: bool,
    record: bool,
) -> torch.Tensor:
    """The net of the blocks' concatenation (C++; one dtype, CPU).

    Args:
        blocks: column blocks ``(n, d_k)`` of the input, float32 or float64.
        weights: unscaled layer weights ``(d_i, d_{i+1})``, ``d_0 = sum d_k``, the blocks'
            dtype.
        alphas: each layer's weight scale.
        silu: SiLU between layers (else none).
        record: record the ops one by one (module docstring; for training), else one node.

    Returns:
        (n, d_last), the blocks' dtype.
    """
    return library_operator("allegro_scaled_mlp")(
        list(blocks), list(weights), list(alphas), silu, record
    )
