"""Bessel radial basis and the polynomial cutoff envelope."""

from __future__ import annotations

import math

import pytest
import torch

from equiforce.o3 import bessel_basis, polynomial_cutoff
from equiforce.o3.radial import envelope


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


@pytest.mark.parametrize("p", [2, 5, 6])
def test_envelope_in_horner_form_is_the_expanded_polynomial(p):
    x = torch.linspace(0.0, 1.2, 61, dtype=torch.float64).reshape(-1, 1)
    expanded = (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * x**p
        + p * (p + 2.0) * x ** (p + 1)
        - p * (p + 1.0) / 2.0 * x ** (p + 2)
    )
    # terms up to ~20 cancel near x = 1: rounding of a few 1e-15 each
    torch.testing.assert_close(envelope(x, p), expanded, atol=1e-13, rtol=0)
    # the cutoff is the envelope inside r_max and zero beyond
    torch.testing.assert_close(
        polynomial_cutoff(3.0 * x, 3.0, p), envelope(x, p) * (x < 1.0), atol=1e-14, rtol=1e-13
    )
