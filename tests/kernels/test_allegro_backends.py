"""Allegro tensor-product backends agree with ``reference`` over a catalogue of layer shapes.

Forward, first derivatives (inputs and weights) and second derivatives (the force-training
double backward: a loss on input gradients, differentiated again), float32 and float64.
"""

from __future__ import annotations

import pytest
import torch

from equiforce.kernels import make_allegro_tp
from equiforce.kernels.allegro_fast import FastAllegroTensorProduct
from equiforce.kernels.allegro_reference import AllegroTensorProduct
from equiforce.o3.allegro_tp import (
    AllegroTPDescriptor,
    allegro_layer_irreps,
    tensor_track_irreps,
)

# (name, l_max, parity, num_layers, mul): the models of tests, configs and benchmarks
MODELS = [
    ("scaling-tiny", 1, True, 1, 8),
    ("example", 1, True, 2, 16),
    ("small", 2, True, 2, 32),
    ("big", 2, True, 2, 64),
    ("sh-parity", 2, False, 3, 4),
    ("l3", 3, True, 3, 4),
    ("l0", 0, True, 2, 4),
]


def _catalogue() -> list:
    cases = []
    for name, l_max, parity, num_layers, mul in MODELS:
        chain = allegro_layer_irreps(l_max, parity, num_layers)
        irreps_sh, _ = tensor_track_irreps(l_max, parity)
        for k in range(num_layers):
            for coupling in (True, False):
                descriptor = AllegroTPDescriptor(chain[k], irreps_sh, chain[k + 1], mul, coupling)
                cases.append(pytest.param(descriptor, id=f"{name}-layer{k}-coupling{coupling}"))
    return cases


CATALOGUE = _catalogue()


def _case(case_id: str) -> AllegroTPDescriptor:
    return next(case.values[0] for case in CATALOGUE if case.id == case_id)


TOLERANCE = {
    torch.float64: {"atol": 1e-11, "rtol": 1e-11},
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
}


def _pair(descriptor: AllegroTPDescriptor, dtype: torch.dtype):
    reference = AllegroTensorProduct(descriptor, torch.Generator().manual_seed(3)).to(dtype)
    fast = FastAllegroTensorProduct(descriptor, torch.Generator().manual_seed(3)).to(dtype)
    return reference, fast


def _inputs(descriptor: AllegroTPDescriptor, dtype: torch.dtype, n_edges: int = 23):
    generator = torch.Generator().manual_seed(5)
    n_atoms, mul = 6, descriptor.mul
    x1 = torch.randn(n_edges, mul, descriptor.irreps_in1.dim, generator=generator)
    env = torch.randn(n_atoms, mul, descriptor.irreps_in2.dim, generator=generator)
    centre = torch.randint(0, n_atoms, (n_edges,), generator=generator)
    return x1.to(dtype).requires_grad_(True), env.to(dtype).requires_grad_(True), centre


def _second_order(module, x1, env, centre) -> list[torch.Tensor]:
    """Gradients of a loss on the input gradients (what force training differentiates)."""
    out = module(x1, env, centre)
    probe = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
    g1, g_env = torch.autograd.grad((out * probe).sum(), (x1, env), create_graph=True)
    loss = (g1**2).sum() + (g_env**3).sum() + (out**2).sum()
    return list(torch.autograd.grad(loss, (x1, env, module.weight)))


def test_fast_has_the_reference_parameters_and_loads_its_state():
    """Same parameter names, shapes and initial values; checkpoints load across backends."""
    descriptor = _case("small-layer0-couplingTrue")
    reference, fast = _pair(descriptor, torch.float64)
    assert {n: p.shape for n, p in reference.named_parameters()} == {
        n: p.shape for n, p in fast.named_parameters()
    }
    assert set(reference.state_dict()) == set(fast.state_dict()) == {"weight"}
    torch.testing.assert_close(reference.weight, fast.weight)  # same initial draws
    fast.load_state_dict({"weight": torch.full_like(fast.weight, 0.5)})
    assert bool((fast.weight == 0.5).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("descriptor", CATALOGUE)
def test_fast_matches_reference_to_second_order(descriptor, dtype):
    """Outputs, input/weight gradients and the force-training double backward agree."""
    reference, fast = _pair(descriptor, dtype)
    x1, env, centre = _inputs(descriptor, dtype)
    out_ref, out_fast = reference(x1, env, centre), fast(x1, env, centre)
    assert (
        out_fast.shape == out_ref.shape == (x1.shape[0], descriptor.mul, descriptor.irreps_out.dim)
    )
    torch.testing.assert_close(out_fast, out_ref, **TOLERANCE[dtype])
    for got, want in zip(
        _second_order(fast, x1, env, centre), _second_order(reference, x1, env, centre), strict=True
    ):
        torch.testing.assert_close(got, want, **TOLERANCE[dtype])


def test_fast_handles_no_edges_and_strided_inputs():
    """An empty graph and a component-major (non-contiguous) input both work."""
    descriptor = _case("small-layer0-couplingTrue")
    reference, fast = _pair(descriptor, torch.float64)
    x1, env, centre = _inputs(descriptor, torch.float64, n_edges=0)
    assert fast(x1, env, centre).shape == (0, descriptor.mul, descriptor.irreps_out.dim)
    x1, env, centre = _inputs(descriptor, torch.float64)
    strided = x1.detach().permute(2, 0, 1).contiguous().permute(1, 2, 0)
    torch.testing.assert_close(fast(strided, env, centre), reference(x1, env, centre))


@pytest.mark.parametrize("case_id", ["small-layer0-couplingTrue", "small-layer1-couplingFalse"])
def test_fast_gradgradcheck(case_id):
    """Finite-difference check of first and second derivatives (general and dot modes)."""
    descriptor = _case(case_id)
    descriptor = AllegroTPDescriptor(
        descriptor.irreps_in1,
        descriptor.irreps_in2,
        descriptor.irreps_out,
        2,
        descriptor.path_channel_coupling,
    )
    fast = FastAllegroTensorProduct(descriptor, torch.Generator().manual_seed(0))
    x1, env, centre = _inputs(descriptor, torch.float64, n_edges=3)
    assert torch.autograd.gradgradcheck(lambda a, b: fast(a, b, centre), (x1, env))


@pytest.mark.parametrize("math_dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_fast_math_dtype_matches_reference(math_dtype):
    """``math_dtype`` runs the contraction in that dtype and returns the input dtype."""
    descriptor = _case("small-layer0-couplingTrue")
    reference = AllegroTensorProduct(descriptor, torch.Generator().manual_seed(3), math_dtype)
    fast = FastAllegroTensorProduct(descriptor, torch.Generator().manual_seed(3), math_dtype)
    x1, env, centre = _inputs(descriptor, torch.float64)
    out = fast(x1, env, centre)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference(x1, env, centre), **TOLERANCE[math_dtype])


def test_fast_is_the_registered_allegro_backend():
    """``make_allegro_tp`` builds the fast executor for ``fast`` (and ``auto`` on CPU)."""
    descriptor = _case("example-layer0-couplingTrue")
    for backend in ("fast", "auto"):
        module = make_allegro_tp(descriptor, torch.Generator().manual_seed(0), backend)
        assert isinstance(module, FastAllegroTensorProduct)
    module = make_allegro_tp(descriptor, torch.Generator().manual_seed(0), "reference")
    assert isinstance(module, AllegroTensorProduct)
