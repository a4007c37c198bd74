"""Whether a call is being traced, for ops that run one way eagerly and another in a trace.

The kernel library's composite operators (Allegro's MLPs and geometry, ``split_cat``: C++
autograd Functions over CPU loops) cannot be traced, and some torch
formulations are chosen for eager speed but not for Inductor's; both
switch to a traceable formulation under a trace.
"""

from __future__ import annotations

import torch

__all__ = ["traced"]


def traced(*tensors: torch.Tensor) -> bool:
    """True under ``torch.compile`` or TorchScript scripting, or when any of ``tensors`` is a
    tracer's tensor (``make_fx`` / ``torch.export``: a FakeTensor or functional tensor, not a
    plain ``torch.Tensor``)."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_scripting()
        or any(type(t) is not torch.Tensor for t in tensors)
    )
