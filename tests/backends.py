"""Every kernel backend as a pytest parameter; ``cueq`` skips where cuequivariance is absent."""

from __future__ import annotations

import pytest

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
