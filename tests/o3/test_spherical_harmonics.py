"""Spherical harmonics: normalisation, parity, equivariance."""

from __future__ import annotations

import math

import torch
from scipy.spatial.transform import Rotation

from equiforce.o3 import sh_irreps, spherical_harmonics, wigner_D


def _vectors(n: int = 20, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=generator, dtype=torch.float64) * 2.5


def test_component_normalisation_and_degree_one():
    vectors = _vectors()
    sh = spherical_harmonics(3, vectors)
    assert sh.shape == (20, sh_irreps(3).dim)
    for ell in range(4):
        block = sh[:, ell * ell : (ell + 1) ** 2]
        torch.testing.assert_close(
            block.pow(2).sum(1), torch.full((20,), 2.0 * ell + 1, dtype=torch.float64)
        )
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    torch.testing.assert_close(sh[:, 1:4], math.sqrt(3.0) * unit)
    torch.testing.assert_close(sh[:, 0], torch.ones(20, dtype=torch.float64))


def test_parity_is_minus_one_to_the_l():
    vectors = _vectors(seed=1)
    sh, flipped = spherical_harmonics(4, vectors), spherical_harmonics(4, -vectors)
    for ell in range(5):
        block = slice(ell * ell, (ell + 1) ** 2)
        torch.testing.assert_close(flipped[:, block], (-1) ** ell * sh[:, block])


def test_rotating_vectors_rotates_harmonics_with_one_matrix_per_degree():
    vectors = _vectors(seed=2)
    rotation = torch.tensor(Rotation.random(random_state=5).as_matrix())
    sh, rotated = spherical_harmonics(4, vectors), spherical_harmonics(4, vectors @ rotation.T)
    for ell in range(5):
        block = slice(ell * ell, (ell + 1) ** 2)
        expected = sh[:, block] @ wigner_D(ell, rotation).T
        torch.testing.assert_close(rotated[:, block], expected, atol=1e-12, rtol=0.0)


def test_float32_is_supported():
    sh = spherical_harmonics(2, _vectors().float())
    assert sh.dtype == torch.float32 and torch.isfinite(sh).all()
