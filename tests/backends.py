"""Every kernel backend as a pytest parameter (``cueq`` skips where cuequivariance is absent),
Allegro's C++ ops switched off, and a kernel's derivatives to any order, for comparing a kernel
with its torch formulation."""

from __future__ import annotations

import pytest
import torch

from equiforce.kernels.registry import BACKENDS, cueq_installed

BACKEND_PARAMS = [
    pytest.param(
        b,
        marks=pytest.mark.skipif(
            b == "cueq" and not cueq_installed(), reason="cuequivariance-torch not installed"
        ),
    )
    for b in BACKENDS
]


def allegro_torch_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch Allegro's C++ CPU ops (geometry, tensor track, product, MLPs) to torch formulations
    and the environment's spreads to the column gathers a trace records, for the rest of a
    test: the reference a kernel is compared with, and the ops a trace of a low-precision
    model records (eager equals a trace bit for bit only then)."""
    from equiforce.kernels import allegro_fast
    from equiforce.nn.allegro import embedding, mlp

    for module, name in (
        (embedding, "use_geometry_kernel"),
        (mlp, "use_tensor_track_kernels"),
        (mlp, "use_mlp_kernel"),
        (allegro_fast, "kernel_ops_apply"),
    ):
        monkeypatch.setattr(module, name, lambda *args: False)
    monkeypatch.setattr(mlp, "spread_by_gathers", lambda *args: True)  # as traced


def derivatives(f, inputs: tuple[torch.Tensor, ...], order: int) -> list[torch.Tensor]:
    """``f(*inputs)`` and ``order`` rounds of its derivatives with respect to ``inputs``: first
    of a fixed projection of the output, then each round's gradients squared and summed."""
    out = f(*inputs)
    results = [out]
    scalar = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
    for _ in range(order):
        grads = torch.autograd.grad(scalar, inputs, create_graph=True)
        results += grads
        scalar = sum((g**2).sum() for g in grads)
    return results
