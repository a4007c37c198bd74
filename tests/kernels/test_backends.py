"""Every kernel backend against ``reference`` over a catalogue of real MACE layer shapes.

For each executor kind, size (small/medium/large: 16/64/128 channels, hidden L 0/1/2,
max_ell 3, correlation 1..3, 1..4 species), feature layout (``mul_ir``, and ``ir_mul`` as
MACE runs them), dtype (float32, float64) and device (CPU; CUDA cases skip without a GPU):
forward outputs, first derivatives, and the parameter (and input)
gradients of a force-style loss ``|d(y . v)/dx|^2`` (double backward) agree with the
reference executor holding the same weights.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from equiforce.kernels import executor_class
from equiforce.kernels.registry import executor_key
from equiforce.o3 import (
    ChannelwiseTPDescriptor,
    Irreps,
    LinearDescriptor,
    SymmetricContractionDescriptor,
    hidden_irreps,
    sh_irreps,
    tp_target_irreps,
)
from equiforce.testing.tolerances import TOL
from tests.backends import BACKEND_PARAMS

SH = sh_irreps(3)
SIZES = {"small": (16, 0), "medium": (64, 1), "large": (128, 2)}  # channels, hidden L
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]
TOLERANCES = {torch.float64: TOL.fp64, torch.float32: TOL.fp32}
GRAD_TOLERANCES = {torch.float64: TOL.fp64_grad, torch.float32: TOL.fp32}
FAST_BACKENDS = [p for p in BACKEND_PARAMS if p.values[0] != "reference"]
LAYOUTS = ["mul_ir", "ir_mul"]


def _linear_case(size: str) -> tuple:
    channels, lmax = SIZES[size]
    hidden = hidden_irreps(channels, lmax)
    target = tp_target_irreps(channels, SH)
    cases = {  # linear_up, message mixing (10 blocks -> 4), species skip, readout-like
        "small": (LinearDescriptor(hidden, hidden), 0),
        "medium": (LinearDescriptor(_tp(channels, lmax).irreps_out, target), 0),
        "large": (LinearDescriptor(hidden, hidden, 4), 4),
    }
    return cases[size]


def _tp(channels: int, lmax: int) -> ChannelwiseTPDescriptor:
    hidden = hidden_irreps(channels, lmax)
    return ChannelwiseTPDescriptor(hidden, SH, tp_target_irreps(channels, SH))


def _symmetric_case(size: str) -> tuple:
    channels, lmax = SIZES[size]
    target = tp_target_irreps(channels, SH)
    correlation, n_types = {"small": (1, 1), "medium": (2, 2), "large": (3, 4)}[size]
    out = hidden_irreps(channels, lmax)
    return SymmetricContractionDescriptor(target, out, correlation), n_types


def _pair(kind: str, backend: str, args: tuple, dtype, device):
    """Reference and ``backend`` executors with the same weights."""
    ref = executor_class(kind, "reference")(*args).to(device=device, dtype=dtype)
    other = executor_class(kind, backend)(*args).to(device=device, dtype=dtype)
    other.load_state_dict(ref.state_dict())
    return ref, other


def _randn(*shape, dtype, device, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype)


def _force_style(module, inputs: list[torch.Tensor], call) -> dict[str, torch.Tensor]:
    """Output, input gradients, and gradients of ``|d(y . v)/d inputs[0]|^2``."""
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    y = call(module, *leaves)
    v = _randn(*y.shape, dtype=y.dtype, device=y.device, seed=99)
    first = torch.autograd.grad((y * v).sum(), leaves, create_graph=True)
    loss = sum((g**2).sum() for g in first)
    params = list(module.parameters())
    second = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    out = {"y": y.detach()}
    out.update({f"d_input{i}": g.detach() for i, g in enumerate(first)})
    for i, g in enumerate(second):
        out[f"dd_{i}"] = torch.zeros(()) if g is None else g.detach()
    return out


def _assert_agree(ref: dict, other: dict, dtype) -> None:
    for key, expected in ref.items():
        tol = TOLERANCES[dtype] if key == "y" else GRAD_TOLERANCES[dtype]
        scale = max(expected.abs().max().item(), 1.0)
        torch.testing.assert_close(
            other[key].cpu(), expected.cpu(), atol=tol.atol * scale, rtol=tol.rtol, msg=key
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_linear_matches_reference(backend, layout, size, dtype, device):
    desc, n_types = _linear_case(size)
    desc = dataclasses.replace(desc, layout=layout)
    ref, other = _pair("linear", backend, (desc, torch.Generator().manual_seed(1)), dtype, device)
    x = _randn(9, desc.irreps_in.dim, dtype=dtype, device=device, seed=2)
    atom_type = torch.arange(9, device=device) % max(n_types, 1)

    def call(module, x):
        return module(x, atom_type if n_types else None)

    _assert_agree(_force_style(ref, [x], call), _force_style(other, [x], call), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_channelwise_tp_matches_reference(backend, layout, size, dtype, device):
    channels, lmax = SIZES[size]
    layer_one = size == "small"  # scalar node features: MACE's first interaction
    desc = dataclasses.replace(_tp(channels, 0 if layer_one else lmax), layout=layout)
    ref, other = _pair("channelwise_tp", backend, (desc,), dtype, device)
    n_nodes, n_edges = 6, 20
    nodes = _randn(n_nodes, desc.irreps_in1.dim, dtype=dtype, device=device, seed=3)
    sh = _randn(n_edges, desc.irreps_in2.dim, dtype=dtype, device=device, seed=4)
    weights = _randn(n_edges, desc.weight_numel, dtype=dtype, device=device, seed=5)
    index = torch.randint(0, n_nodes, (2, n_edges), generator=torch.Generator().manual_seed(6))
    index = index.to(device)

    def call(module, nodes, sh, weights):
        return module(nodes, sh, weights, index[1], index[0])

    inputs = [nodes, sh, weights]
    _assert_agree(_force_style(ref, inputs, call), _force_style(other, inputs, call), dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_channelwise_tp_reads_strided_edge_indices(backend):
    """Edge indices that are strided views (rows of ``index.T.contiguous().T``, as a caller
    that builds pairs row by row passes them) give the reference results: the C++ kernels
    index raw pointers and once read such views as if contiguous (silently wrong energies)."""
    desc = _tp(16, 1)
    ref, other = _pair("channelwise_tp", backend, (desc,), torch.float64, "cpu")
    n_nodes, n_edges = 7, 24
    nodes = _randn(n_nodes, desc.irreps_in1.dim, dtype=torch.float64, device="cpu", seed=3)
    sh = _randn(n_edges, desc.irreps_in2.dim, dtype=torch.float64, device="cpu", seed=4)
    weights = _randn(n_edges, desc.weight_numel, dtype=torch.float64, device="cpu", seed=5)
    index = torch.randint(0, n_nodes, (2, n_edges), generator=torch.Generator().manual_seed(6))
    strided = index.T.contiguous().T
    assert not strided[0].is_contiguous()

    def call(module, nodes, sh, weights):
        return module(nodes, sh, weights, strided[1], strided[0])

    inputs = [nodes, sh, weights]
    _assert_agree(_force_style(ref, inputs, call), _force_style(other, inputs, call), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_symmetric_contraction_matches_reference(backend, layout, size, dtype, device):
    desc, n_types = _symmetric_case(size)
    desc = dataclasses.replace(desc, layout=layout)
    args = (desc, n_types, torch.Generator().manual_seed(7))
    ref, other = _pair("symmetric_contraction", backend, args, dtype, device)
    dim = desc.coupling_irreps.dim
    # MACE's messages are O(1) per component; keep the cubic terms of that order
    x = 0.5 * _randn(7, desc.num_channels, dim, dtype=dtype, device=device, seed=8)
    atom_type = torch.arange(7, device=device) % n_types

    def call(module, x):
        return module(x, atom_type)

    _assert_agree(_force_style(ref, [x], call), _force_style(other, [x], call), dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_math_dtype_runs_the_contraction_in_that_dtype(backend):
    desc, n_types = _symmetric_case("medium")
    args = (desc, n_types, torch.Generator().manual_seed(7))
    ref = executor_class("symmetric_contraction", "reference")(*args)
    mixed = executor_class("symmetric_contraction", backend)(*args, math_dtype=torch.float32)
    mixed.load_state_dict(ref.state_dict())
    x = _randn(
        5, desc.num_channels, desc.coupling_irreps.dim, dtype=torch.float64, device="cpu", seed=1
    )
    atom_type = torch.arange(5) % n_types
    out = mixed(x, atom_type)
    assert out.dtype == torch.float64
    expected = ref(x, atom_type)
    error = (out - expected).abs().max().item()
    assert error < TOL.fp32.atol * max(expected.abs().max().item(), 1.0)
    assert error > 0.0  # float32 arithmetic, not float64


def test_fast_backend_implements_every_mace_kind():
    for kind in ("linear", "channelwise_tp", "symmetric_contraction"):
        cls = executor_class(kind, "fast")
        assert executor_key(cls.__new__(cls)) == (kind, "fast")


def test_irreps_of_the_catalogue_are_real_mace_layers():
    assert _tp(128, 1).irreps_out.dim == 128 * 40  # 10 paths into 0e, 1o, 2e, 3o
    assert Irreps(_symmetric_case("large")[0].irreps_in) == tp_target_irreps(128, SH)
