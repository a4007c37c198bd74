"""Allegro embedding pieces against their plain definitions (float64 to 1e-12)."""

from __future__ import annotations

import math

import pytest
import torch

from equiforce.nn.allegro import mlp
from equiforce.nn.allegro.embedding import enveloped_bessel_basis, unit_sh
from equiforce.nn.allegro.mlp import EdgeMajorWeightedChannels, WeightedChannels
from equiforce.o3.irreps import Irreps
from equiforce.o3.radial import polynomial_cutoff
from equiforce.o3.spherical_harmonics import spherical_harmonics


def _vectors(n: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=generator, dtype=torch.float64) * 2.0


def test_enveloped_bessel_basis_is_sinc_basis_times_envelope():
    """``sin(n pi x) env(x) / (pi x)`` is nequip's ``sinc(n x) n env(x)``; zero past r_max."""
    x = torch.linspace(0.01, 1.3, 97, dtype=torch.float64).unsqueeze(-1)
    n = torch.arange(1, 9, dtype=torch.float64)
    expected = torch.sinc(x * n) * n * polynomial_cutoff(x, 1.0, 6)
    got = enveloped_bessel_basis(x, 8, 6)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert bool((got[x.squeeze(-1) >= 1.0] == 0).all())


@pytest.mark.parametrize("l_max", [0, 1, 2])
def test_unit_sh_matches_spherical_harmonics(l_max):
    """The closed form (l_max <= 1) and the e3nn path give the shared o3 values."""
    vectors = _vectors()
    lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
    got = unit_sh(l_max, vectors, lengths)
    torch.testing.assert_close(got, spherical_harmonics(l_max, vectors), rtol=1e-12, atol=1e-12)


def test_unit_sh_gradient_matches_spherical_harmonics():
    """Forces see the same derivative through the closed form."""
    vectors = _vectors().requires_grad_(True)
    lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
    probe = torch.randn(vectors.shape[0], 4, dtype=torch.float64)
    (got,) = torch.autograd.grad((unit_sh(1, vectors, lengths) * probe).sum(), vectors)
    (want,) = torch.autograd.grad((spherical_harmonics(1, vectors) * probe).sum(), vectors)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weighted_channels_edge_major_is_forward_transposed(dtype, traced, monkeypatch):
    """The edge-major layout holds the same numbers as ``forward``, one row per edge, and so
    do its derivatives, whether spread by one-hot products (eager) or column gathers (as
    traced): both only move numbers."""
    monkeypatch.setattr(mlp, "spread_by_gathers", lambda weights: traced)
    irreps = Irreps("1x0e + 1x1o + 1x2e")
    mul, n_edges = 5, 7
    weighter = WeightedChannels(irreps, mul).to(dtype)
    edge_weighter = EdgeMajorWeightedChannels(irreps, mul).to(dtype)
    basis = torch.randn(n_edges, irreps.dim, dtype=dtype, requires_grad=True)
    weights = torch.randn(n_edges, weighter.weight_numel, dtype=dtype, requires_grad=True)
    per_channel = weighter(basis, weights)  # (n_edges, mul, dim)
    edge_major = edge_weighter(basis, weights)
    assert edge_major.shape == (n_edges, irreps.dim * mul) and edge_major.is_contiguous()
    assert edge_major.dtype == dtype
    transposed = edge_major.view(n_edges, irreps.dim, mul).transpose(1, 2)
    torch.testing.assert_close(transposed, per_channel, rtol=0, atol=0)
    probe = torch.randn(n_edges, mul, irreps.dim, dtype=dtype)
    for got, want in zip(
        torch.autograd.grad((transposed * probe).sum(), (basis, weights)),
        torch.autograd.grad((per_channel * probe).sum(), (basis, weights)),
        strict=True,
    ):
        torch.testing.assert_close(got, want)
    # spot check one entry against the definition out[e, u, i] = basis[e, i] * w[e, u, irrep(i)]
    e, u, i = 3, 2, 5  # component 5 lies in the 2e block (irrep 2)
    expected = basis[e, i] * weights[e, u * 3 + 2]
    assert math.isclose(float(edge_major[e, i * mul + u]), float(expected), rel_tol=1e-14)
