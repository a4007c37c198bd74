"""The fused Allegro edge geometry against its unfused definitions (float64 to 1e-12)."""

from __future__ import annotations

import pytest
import torch

from equiforce.kernels.allegro_geometry import edge_geometry
from equiforce.nn.allegro.embedding import enveloped_bessel_basis, unit_sh

NUM_BASIS, P = 8, 6


def _vectors(n: int = 60) -> torch.Tensor:
    """Vectors from 0.3 to ~1.6 r_max (r_max 4 Å): some beyond the cutoff."""
    generator = torch.Generator().manual_seed(3)
    direction = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    length = 0.3 + 6.0 * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    return direction / direction.norm(dim=-1, keepdim=True) * length


def _scales(kind: str, n: int) -> torch.Tensor | float:
    if kind == "float":
        return 0.25
    generator = torch.Generator().manual_seed(4)
    return 1.0 / (3.0 + torch.rand(n, 1, generator=generator, dtype=torch.float64))


def _reference(vec: torch.Tensor, scale: torch.Tensor | float, l_max: int):
    lengths = torch.linalg.norm(vec, dim=-1, keepdim=True)
    basis = enveloped_bessel_basis(lengths * scale, NUM_BASIS, P)
    return basis, unit_sh(l_max, vec, lengths)


def _probe_loss(basis: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(basis.shape, generator=generator, dtype=torch.float64)
    b = torch.randn(sh.shape, generator=generator, dtype=torch.float64)
    return (basis * a).sum() + (sh * b).sum() + (basis.pow(2).sum(-1) * sh[:, -1]).sum()


@pytest.mark.parametrize("l_max", [0, 1])
@pytest.mark.parametrize("scale_kind", ["float", "per_pair"])
def test_values_gradients_and_second_derivatives_equal_reference(l_max, scale_kind):
    """Basis, harmonics, dL/dvec and d(dL/dvec . w)/dvec equal autograd of the definitions."""
    vec = _vectors()
    scale = _scales(scale_kind, vec.shape[0])
    results = []
    for fused in (True, False):
        v = vec.clone().requires_grad_(True)
        if fused:
            basis, sh = edge_geometry(v, scale, NUM_BASIS, P, l_max, torch.float64)
        else:
            basis, sh = _reference(v, scale, l_max)
        (grad,) = torch.autograd.grad(_probe_loss(basis, sh), v, create_graph=True)
        weights = torch.linspace(-1.0, 1.0, grad.numel(), dtype=torch.float64).view_as(grad)
        (second,) = torch.autograd.grad((grad * weights).sum(), v)
        results.append((basis.detach(), sh.detach(), grad.detach(), second))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the test reaches the cutoff: some basis rows are exactly zero, with zero gradient
    beyond = vec.norm(dim=-1) * (scale if isinstance(scale, float) else scale.squeeze(-1)) >= 1
    assert bool(beyond.any()) and bool((results[0][0][beyond] == 0).all())


def test_inference_backward_equals_recomputed_backward():
    """Without create_graph the backward reuses the forward's intermediates: same numbers."""
    vec = _vectors()
    grads = []
    for create_graph in (False, True):
        v = vec.clone().requires_grad_(True)
        basis, sh = edge_geometry(v, 0.25, NUM_BASIS, P, 1, torch.float64)
        (grad,) = torch.autograd.grad(_probe_loss(basis, sh), v, create_graph=create_graph)
        grads.append(grad.detach())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_float32_geometry_from_float64_vectors():
    """A float32 model gets float32 outputs and float64 input gradients close to float64."""
    vec = _vectors()
    v32 = vec.clone().requires_grad_(True)
    basis, sh = edge_geometry(v32, 0.25, NUM_BASIS, P, 1, torch.float32)
    assert basis.dtype == sh.dtype == torch.float32
    (grad32,) = torch.autograd.grad(_probe_loss(basis.double(), sh.double()), v32)
    assert grad32.dtype == torch.float64
    v64 = vec.clone().requires_grad_(True)
    (grad64,) = torch.autograd.grad(_probe_loss(*_reference(v64, 0.25, 1)), v64)
    torch.testing.assert_close(grad32, grad64, rtol=1e-4, atol=1e-4)


def test_gradcheck_and_gradgradcheck():
    vec = _vectors(12).requires_grad_(True)

    def fn(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return edge_geometry(v, 0.25, 4, P, 1, torch.float64)

    assert torch.autograd.gradcheck(fn, (vec,))
    assert torch.autograd.gradgradcheck(fn, (vec,))


def test_refuses_l_max_above_one():
    with pytest.raises(ValueError, match="l_max 1"):
        edge_geometry(_vectors(4), 0.25, NUM_BASIS, P, 2, torch.float64)
