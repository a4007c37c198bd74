"""The C++ edge geometry of Allegro (kernels/allegro_geometry) against the torch formulation of
nn/allegro/embedding: values, and first, second and third derivatives (float64 to 1e-10)."""

import pytest
import torch

from equiforce.kernels.allegro_geometry import edge_geometry, use_geometry_kernel
from equiforce.kernels.extension import kernel_ops
from equiforce.nn.allegro.embedding import enveloped_bessel_basis, unit_sh

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")

N_BASIS, P = 8, 6


def _vectors(n: int = 60) -> torch.Tensor:
    """Edge vectors of 0.3-7 Å: some beyond the 5 Å cutoff."""
    g = torch.Generator().manual_seed(4)
    direction = torch.randn(n, 3, generator=g, dtype=torch.float64)
    length = 0.3 + 6.7 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return (direction / direction.norm(dim=-1, keepdim=True) * length).requires_grad_()


def _inverse(kind: str, n: int):
    if kind == "uniform":
        return 1.0 / 5.0
    g = torch.Generator().manual_seed(5)
    return 1.0 / (3.0 + 3.0 * torch.rand(n, generator=g, dtype=torch.float64))


def _torch_geometry(vec, inverse, l_max, dtype):
    v = vec.to(dtype)
    lengths = torch.linalg.norm(v, dim=-1, keepdim=True)
    scale = inverse.to(dtype).unsqueeze(-1) if isinstance(inverse, torch.Tensor) else inverse
    return enveloped_bessel_basis(lengths * scale, N_BASIS, P), unit_sh(l_max, v, lengths)


def _loss(outputs, probes):
    return sum((o * p).sum() for o, p in zip(outputs, probes, strict=True))


@pytest.mark.parametrize("inverse_kind", ["uniform", "per_edge"])
@pytest.mark.parametrize("l_max", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_equal_torch_formulation(inverse_kind, l_max, dtype):
    vec = _vectors()
    inverse = _inverse(inverse_kind, vec.shape[0])
    basis, sh = edge_geometry(vec, inverse, N_BASIS, P, l_max, dtype)
    ref_basis, ref_sh = _torch_geometry(vec, inverse, l_max, dtype)
    assert basis.dtype == sh.dtype == dtype and sh.shape == ref_sh.shape
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(basis, ref_basis, rtol=tol, atol=tol)
    torch.testing.assert_close(sh, ref_sh, rtol=tol, atol=tol)
    beyond = (vec.detach().norm(dim=-1) * (inverse if isinstance(inverse, float) else inverse)) >= 1
    assert beyond.any() and bool((basis[beyond] == 0).all())


@pytest.mark.parametrize("inverse_kind", ["uniform", "per_edge"])
def test_derivatives_of_every_order_equal_torch(inverse_kind):
    """Forces (first), force training (second, create_graph) and a Hessian-vector loss (third)."""
    vec = _vectors()
    inverse = _inverse(inverse_kind, vec.shape[0])
    g = torch.Generator().manual_seed(6)
    probes = [torch.randn(vec.shape[0], k, generator=g, dtype=torch.float64) for k in (8, 4)]
    orders = []
    for geometry in (
        lambda v: edge_geometry(v, inverse, N_BASIS, P, 1, torch.float64),
        lambda v: _torch_geometry(v, inverse, 1, torch.float64),
    ):
        first = torch.autograd.grad(_loss(geometry(vec), probes), vec, create_graph=True)[0]
        second = torch.autograd.grad((first**2).sum(), vec, create_graph=True)[0]
        third = torch.autograd.grad((second * first).sum(), vec)[0]
        orders.append((first, second, third))
    for ours, ref in zip(*orders, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    # graph-free first derivative (the raw C++ loop) too
    plain = torch.autograd.grad(
        _loss(edge_geometry(vec, inverse, N_BASIS, P, 1, torch.float64), probes), vec
    )[0]
    torch.testing.assert_close(plain, orders[1][0], rtol=1e-10, atol=1e-12)


def test_gradcheck_gradgradcheck():
    vec = _vectors(9)
    for inverse in (0.25, _inverse("per_edge", 9)):

        def geometry(v, inverse=inverse):
            return edge_geometry(v, inverse, 5, 4, 1, torch.float64)

        assert torch.autograd.gradcheck(geometry, (vec,))
        assert torch.autograd.gradgradcheck(geometry, (vec,))


def test_float32_first_derivative_close_to_torch():
    vec = _vectors()
    probes = [torch.randn(vec.shape[0], k, dtype=torch.float32) for k in (8, 4)]
    grads = [
        torch.autograd.grad(_loss(f(vec), probes), vec)[0]
        for f in (
            lambda v: edge_geometry(v, 0.2, N_BASIS, P, 1, torch.float32),
            lambda v: _torch_geometry(v, 0.2, 1, torch.float32),
        )
    ]
    assert grads[0].dtype == torch.float64
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_applies_only_where_it_can():
    vec = _vectors(3)
    assert use_geometry_kernel(vec, torch.float32, 1)
    assert not use_geometry_kernel(vec, torch.float32, 2)  # e3nn harmonics beyond l = 1
    assert not use_geometry_kernel(vec, torch.bfloat16, 1)
    assert not use_geometry_kernel(vec.float(), torch.float32, 1)  # float64 vectors only
    with pytest.raises(RuntimeError, match="l_max must be 0 or 1"):
        edge_geometry(vec, 0.2, N_BASIS, P, 2, torch.float64)
