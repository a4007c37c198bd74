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
