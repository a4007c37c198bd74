"""Backend registry: name resolution, fallbacks, and the ``use_backend`` model transform."""

from __future__ import annotations

import inspect

import pytest
import torch

from equiforce import kernels
from equiforce.kernels import (
    BACKENDS,
    CONSTRUCTOR_ARGS,
    executor_class,
    executor_key,
    make_executor,
    make_linear,
    resolve_backend,
    use_backend,
)
from equiforce.kernels.registry import FALLBACK, KINDS, cueq_available
from equiforce.o3 import Irreps, LinearDescriptor
from equiforce.testing.models import tiny_mace
from tests.backends import BACKEND_PARAMS


def _chain(backend: str) -> list[str]:
    names = [backend]
    while names[-1] in FALLBACK:
        names.append(FALLBACK[names[-1]])
    return names


def test_auto_is_cueq_only_with_cuda_and_cuequivariance():
    assert resolve_backend("auto") == ("cueq" if cueq_available() else "fast")


def test_unknown_backend_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="reference"):
        resolve_backend("triton")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_kind_resolves_along_the_fallback_chain(kind, backend):
    cls = executor_class(kind, backend)
    assert executor_key(cls.__new__(cls)) in [(kind, name) for name in _chain(backend)]


def test_make_linear_honours_an_explicit_backend():
    desc = LinearDescriptor(Irreps("4x0e+2x1o"), Irreps("3x0e+2x1o"))
    linear = make_linear(desc, torch.Generator().manual_seed(0), backend="reference")
    assert executor_key(linear) == ("linear", "reference")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_use_backend_keeps_weights_device_dtype_and_training_flag(backend):
    model = tiny_mace(torch.float32).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    use_backend(model, backend)
    after = model.state_dict()
    assert list(after) == list(state)
    for key, value in state.items():
        assert after[key].dtype == value.dtype
        assert torch.equal(after[key], value)
    assert not any(m.training for m in model.modules())
    keys = {executor_key(m) for m in model.modules()} - {None}
    assert keys and all(name in _chain(backend) for _, name in keys)


@pytest.mark.parametrize("kind", KINDS)
def test_every_executor_and_shorthand_follows_the_constructor_table(kind):
    names = list(CONSTRUCTOR_ARGS[kind])
    for backend in BACKENDS:
        cls = executor_class(kind, backend)
        assert list(inspect.signature(cls.__init__).parameters)[1:] == [*names, "math_dtype"]
    shorthand = getattr(kernels, f"make_{kind}")
    assert list(inspect.signature(shorthand).parameters) == [*names, "backend", "math_dtype"]


def test_make_executor_names_the_arguments_of_a_kind():
    desc = LinearDescriptor(Irreps("2x0e"), Irreps("2x0e"))
    with pytest.raises(TypeError, match=r"linear executors take \['descriptor', 'generator'\]"):
        make_executor("linear", descriptor=desc)
    with pytest.raises(ValueError, match="unknown executor kind"):
        make_executor("conv", descriptor=desc)
