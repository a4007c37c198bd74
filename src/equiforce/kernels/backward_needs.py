"""Which gradients a custom backward must compute: those the running backward pass uses.

``ctx.needs_input_grad`` says which inputs require grad, not which of their gradients the
running pass will use. A force-training step's parameter backward
(``loss.backward(inputs=parameters)``) does not use the gradients that lead only to the
positions (the edge spherical harmonics, the edge vectors): autograd skips those nodes, but a
custom backward that computes all its inputs' gradients in one call would still make them.
``torch._C._will_engine_execute_node`` (the check torch's own checkpointing makes) answers
for the node behind each input; the custom backwards of ``edge_ops``, ``symmetric_ops`` and
``nn.mace.recompute`` skip what it rules out.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["needed_inputs", "will_run"]


def will_run(edge: tuple[Any, int]) -> bool:
    """Whether the running backward pass executes the node behind a gradient edge
    (an entry of ``ctx.next_functions``); True where that cannot be answered (a leaf that
    ``autograd.grad`` captures)."""
    node = edge[0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True


def needed_inputs(ctx: Any, is_tensor: Sequence[bool] | None = None) -> tuple[bool, ...]:
    """``ctx.needs_input_grad`` less the inputs whose gradient the running pass does not use.

    Args:
        ctx: the autograd context of a custom backward (``torch.autograd.Function`` or
            ``torch.library.custom_op``).
        is_tensor: which forward inputs are tensors (``ctx.next_functions`` has one entry
            per tensor input); None: the first ``len(ctx.next_functions)`` inputs are the
            tensors (a custom op's tensors come before its other arguments).

    Returns:
        One flag per forward input.
    """
    if is_tensor is None:
        is_tensor = [k < len(ctx.next_functions) for k in range(len(ctx.needs_input_grad))]
    edges = iter(ctx.next_functions)
    needed = []
    for need, tensor in zip(ctx.needs_input_grad, is_tensor, strict=False):
        edge = next(edges) if tensor else None  # consumed whether needed or not
        needed.append(bool(need) and edge is not None and will_run(edge))
    return tuple(needed)
