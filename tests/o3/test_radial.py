"""Bessel radial basis and the polynomial cutoff envelope."""

from __future__ import annotations

import math

import torch

from equiforce.o3 import bessel_basis, polynomial_cutoff


def test_bessel_basis_matches_formula():
    r = torch.linspace(0.3, 4.9, 17, dtype=torch.float64)[:, None]
    basis = bessel_basis(r, r_max=5.0, num_basis=8)
    n = torch.arange(1, 9, dtype=torch.float64)
    expected = math.sqrt(2.0 / 5.0) * torch.sin(n * math.pi * r / 5.0) / r
    torch.testing.assert_close(basis, expected)


def test_cutoff_is_one_at_origin_and_smoothly_zero_at_r_max():
    for p in (3, 5, 6):
        r = torch.tensor([[1e-9], [5.0], [5.5]], dtype=torch.float64, requires_grad=True)
        value = polynomial_cutoff(r, 5.0, p)
        (first,) = torch.autograd.grad(value.sum(), r, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), r)
        torch.testing.assert_close(
            value.detach()[:, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        )
        torch.testing.assert_close(first.detach()[1:, 0], torch.zeros(2, dtype=torch.float64))
        torch.testing.assert_close(
            second[1:, 0], torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0
        )


def test_cutoff_decreases_monotonically():
    r = torch.linspace(0.0, 5.0, 200, dtype=torch.float64)[:, None]
    values = polynomial_cutoff(r, 5.0, 5)[:, 0]
    assert (values[1:] <= values[:-1] + 1e-15).all()
