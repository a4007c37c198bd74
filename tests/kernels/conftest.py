"""Fixtures of the kernel tests: which build of the kernel library the operators run."""

from __future__ import annotations

import platform
import shutil

import pytest

from equiforce.cpu_features import compiled_features, missing_features
from equiforce.kernels import edge_ops, symmetric_ops
from equiforce.kernels.extension import target_kernel_ops


@pytest.fixture(params=["native", "x86-64-v3"])
def kernel_build(request, monkeypatch) -> str:
    """The build of the kernel library MACE's operator wrappers (``edge_ops``,
    ``symmetric_ops``) call: this CPU's, or the AVX2 one (``x86-64-v3``: 32-byte vectors and
    narrower register blocks, what AVX2 CPUs and packages for them run; built once per source
    hash, ~75 s)."""
    if request.param != "native":
        if platform.machine() != "x86_64" or shutil.which("g++") is None:
            pytest.skip("an x86-64-v3 build needs x86-64 and g++")
        if missing_features(compiled_features(request.param, "g++")):
            pytest.skip(f"this CPU cannot run code for {request.param}")
        library = target_kernel_ops(request.param)
        if library is None:
            pytest.skip(f"the kernel library does not build for {request.param}")
        # the operators' C++ autograd travels with them; fake formulas are not needed here
        monkeypatch.setattr(edge_ops, "_ops", lambda: library.ops)
        monkeypatch.setattr(symmetric_ops, "_ops", lambda: library.ops)
    return request.param
