"""The symmetric-contraction coupling basis: size, equivariance, normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.transform import Rotation

from equiforce.o3 import Irrep, Irreps, SymmetricContractionDescriptor, wigner_D
from equiforce.o3.symmetric import symmetric_basis, symmetric_monomials


def _evaluate(basis: torch.Tensor, x: torch.Tensor, nu: int) -> torch.Tensor:
    """(n_samples, D, K) values of every basis map at the rows of x (n_samples, d)."""
    monomials, _ = symmetric_monomials(x.shape[1], nu)
    products = x[:, monomials].prod(dim=2)
    return torch.einsum("sm,mok->sok", products, basis)


def _block_rotation(irreps: Irreps, matrix: torch.Tensor) -> torch.Tensor:
    det = torch.linalg.det(matrix)
    blocks = [wigner_D(ir.l, matrix * det) * (det if ir.p == -1 else 1.0) for _, ir in irreps]
    return torch.block_diag(*blocks)


@pytest.mark.parametrize(
    "irreps, ir_out, nu, count",
    [
        ("0e+1o", "0e", 2, 2),  # s^2, v.v
        ("0e+1o", "0e", 3, 2),  # s^3, s v.v
        ("0e+1o", "1o", 2, 1),  # s v
        ("0e+1o", "1o", 3, 2),  # s^2 v, (v.v) v
        ("0e+1o", "1e", 2, 0),  # v x v = 0
        ("1o", "0e", 1, 0),
    ],
)
def test_basis_size_is_the_number_of_independent_symmetric_maps(irreps, ir_out, nu, count):
    assert symmetric_basis(Irreps(irreps), Irrep(ir_out), nu).shape[2] == count


@pytest.mark.parametrize("ir_out", ["0e", "1o", "2e"])
@pytest.mark.parametrize("reflect", [False, True])
def test_basis_maps_are_o3_equivariant(ir_out, reflect):
    irreps = Irreps("0e+1o+2e+3o")
    matrix = torch.tensor(Rotation.random(random_state=3).as_matrix()) * (-1.0 if reflect else 1.0)
    x = torch.randn(5, irreps.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_rotated = x @ _block_rotation(irreps, matrix).T
    out_rotation = _block_rotation(Irreps(ir_out), matrix)
    for nu in (1, 2, 3):
        basis = symmetric_basis(irreps, Irrep(ir_out), nu)
        expected = torch.einsum("ij,sjk->sik", out_rotation, _evaluate(basis, x, nu))
        torch.testing.assert_close(_evaluate(basis, x_rotated, nu), expected, atol=1e-11, rtol=0)


def test_basis_has_component_normalisation_and_is_orthogonal():
    irreps, ir_out, nu = Irreps("0e+1o+2e"), Irrep("1o"), 3
    basis = symmetric_basis(irreps, ir_out, nu)
    _, multiplicity = symmetric_monomials(irreps.dim, nu)
    # back from monomial coefficients to the symmetric tensor's Frobenius inner product
    gram = torch.einsum("mok,mol,m->kl", basis, basis, 1.0 / multiplicity)
    expected = torch.eye(basis.shape[2], dtype=torch.float64) * ir_out.dim
    torch.testing.assert_close(gram, expected, atol=1e-12, rtol=0)


def test_descriptor_validates_and_returns_fresh_copies():
    with pytest.raises(ValueError, match="multiplicity"):
        SymmetricContractionDescriptor(Irreps("4x0e+2x1o"), Irreps("4x0e"), 2)
    with pytest.raises(ValueError, match="correlation"):
        SymmetricContractionDescriptor(Irreps("4x0e"), Irreps("4x0e"), 4)
    desc = SymmetricContractionDescriptor(Irreps("4x0e+4x1o"), Irreps("4x0e+4x1o"), 2)
    assert desc.num_channels == 4 and desc.coupling_irreps == Irreps("0e+1o")
    first = desc.basis(0, 2)
    first.zero_()
    assert desc.basis(0, 2).abs().max() > 0
    assert math.comb(4 + 1, 2) == desc.basis(0, 2).shape[0]
