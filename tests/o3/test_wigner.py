"""Clebsch–Gordan coefficients and Wigner D matrices in the real SH basis."""

from __future__ import annotations

import pytest
import torch
from scipy.spatial.transform import Rotation

from equiforce.o3 import wigner_3j, wigner_D
from equiforce.o3.e3nn_compat import e3nn_o3
from equiforce.testing.tolerances import TOL

TRIPLES = [
    (l1, l2, l3) for l1 in range(4) for l2 in range(4) for l3 in range(abs(l1 - l2), l1 + l2 + 1)
]


def _rotation(seed: int) -> torch.Tensor:
    return torch.tensor(Rotation.random(random_state=seed).as_matrix())


def test_wigner_d_is_an_orthogonal_representation():
    r1, r2 = _rotation(0), _rotation(1)
    for ell in range(5):
        d1, d2, d12 = wigner_D(ell, r1), wigner_D(ell, r2), wigner_D(ell, r1 @ r2)
        torch.testing.assert_close(d1 @ d1.T, torch.eye(2 * ell + 1, dtype=torch.float64))
        torch.testing.assert_close(d1 @ d2, d12, atol=TOL.fp64_grad.atol, rtol=0.0)


@pytest.mark.parametrize("l1, l2, l3", TRIPLES)
def test_coupling_is_equivariant(l1, l2, l3):
    rotation = _rotation(l1 + 4 * l2 + 16 * l3)
    d1, d2, d3 = (wigner_D(ell, rotation) for ell in (l1, l2, l3))
    coupling = wigner_3j(l1, l2, l3)
    rotated_inputs = torch.einsum("ia,jb,abk->ijk", d1.T, d2.T, coupling)
    rotated_output = torch.einsum("ijc,kc->ijk", coupling, d3)
    torch.testing.assert_close(rotated_inputs, rotated_output, atol=1e-12, rtol=0.0)


@pytest.mark.parametrize("l1, l2, l3", TRIPLES)
def test_coupling_has_unit_norm_and_matches_e3nn_up_to_sign(l1, l2, l3):
    ours = wigner_3j(l1, l2, l3)
    theirs = e3nn_o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    assert abs(ours.norm().item() - 1.0) < 1e-14
    sign = torch.sign((ours * theirs).sum())
    torch.testing.assert_close(ours, sign * theirs, atol=1e-14, rtol=0.0)


def test_coupling_sign_is_canonical():
    for ell in range(4):
        identity = torch.eye(2 * ell + 1, dtype=torch.float64) / (2 * ell + 1) ** 0.5
        torch.testing.assert_close(wigner_3j(0, ell, ell)[0], identity)
        torch.testing.assert_close(wigner_3j(ell, 0, ell)[:, 0], identity)
        torch.testing.assert_close(wigner_3j(ell, ell, 0)[:, :, 0], identity)
    for l1, l2, l3 in TRIPLES:
        flat = wigner_3j(l1, l2, l3).flatten()
        assert flat[flat.abs() > 1e-8][0] > 0


def test_coupling_returns_copies_in_requested_dtype():
    first = wigner_3j(1, 1, 2, dtype=torch.float32)
    assert first.dtype == torch.float32
    first.zero_()
    assert wigner_3j(1, 1, 2).abs().max() > 0


def test_triangle_rule_is_enforced():
    with pytest.raises(ValueError, match="triangle"):
        wigner_3j(1, 1, 3)
