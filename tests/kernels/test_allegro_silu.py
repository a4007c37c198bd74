"""The C++ SiLU of Allegro's MLPs (kernels/allegro_silu): values, first, second and third
derivatives equal torch's silu in float64. A whole Allegro's force-loss parameter gradients with
it (and Allegro's other C++ ops) against torch's: tests/kernels/test_allegro_tensor_track.py."""

import pytest
import torch

from equiforce.kernels.allegro_silu import silu, silu_kernels

pytestmark = pytest.mark.skipif(silu_kernels() is None, reason="no C++ compiler")


def _x(shape=(40, 6)):
    g = torch.Generator().manual_seed(3)
    return (4.0 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()


def test_values_and_derivatives_equal_torch():
    x = _x()
    ours, ref = silu(x), torch.nn.functional.silu(x)
    assert "::Silu>" in ours.grad_fn.name()  # the C++ node, not SiluBackward0
    assert torch.allclose(ours, ref, rtol=0, atol=1e-14)
    w = torch.randn_like(x)
    g1 = torch.autograd.grad((w * ours**2).sum(), x, create_graph=True)[0]
    g2 = torch.autograd.grad((w * ref**2).sum(), x, create_graph=True)[0]
    assert torch.allclose(g1, g2, rtol=0, atol=1e-10)
    h1 = torch.autograd.grad((g1**2).sum(), x)[0]
    h2 = torch.autograd.grad((g2**2).sum(), x)[0]
    assert torch.allclose(h1, h2, rtol=0, atol=1e-10)


def test_gradcheck_gradgradcheck():
    x = _x((7, 3))
    assert torch.autograd.gradcheck(silu, (x,))
    assert torch.autograd.gradgradcheck(silu, (x,))


def test_third_derivative_equals_torch():
    """A Hessian-vector loss (distillation) differentiates the double backward once more."""
    x, w = _x((30, 4)), torch.randn(30, 4, dtype=torch.float64)
    thirds = []
    for f in (silu, torch.nn.functional.silu):
        g = torch.autograd.grad((w * f(x)).sum(), x, create_graph=True)[0]
        h = torch.autograd.grad((w * g**2).sum(), x, create_graph=True)[0]
        thirds.append(torch.autograd.grad((h**2).sum(), x)[0])
    assert torch.allclose(thirds[0], thirds[1], rtol=0, atol=1e-10)
    assert thirds[0].abs().max() > 1e-3


def test_plain_torch_without_grad_or_in_float32_graph_free_calls():
    x = _x().detach()
    assert silu(x).grad_fn is None
    assert torch.equal(silu(x), torch.nn.functional.silu(x))
