"""Coupling basis of MACE's symmetric contraction (the equivariant product basis).

Per channel c the product block maps ``x = x[c, :]`` (the ``d`` components of one channel
across the coupling irreps, e.g. ``0e + 1o + 2e + 3o``, d = 16) to

    B[c, o] = sum_{nu=1..correlation} sum_k W_nu[type, k, c] * U_nu[o, i_1..i_nu, k] x_i1 ... x_inu

for every output irrep. Only the symmetric part of ``U_nu`` matters, since ``x ⊗ ... ⊗ x`` is
symmetric. This module builds a basis of exactly those symmetric equivariant maps:

1. every iterated coupling path ``((x ⊗ x) -> ir_mid) ⊗ x -> ir_out`` with the canonical
   Clebsch–Gordan coefficients (``equiforce.o3.wigner``) is symmetrised over its inputs;
2. Gram–Schmidt over the paths, in their deterministic order, keeps the linearly
   independent ones and orthonormalises them; each basis element is then scaled to norm
   ``sqrt(ir_out.dim)`` (component normalisation).

The basis is expressed on monomials ``x_i1 x_i2 ... (i1 <= i2 <= ...)``, with the
permutation multiplicity folded into the coefficients, so executors multiply each distinct
monomial once. It spans the same space as mace-torch's (redundant) U matrices with fewer
weights; ``equiforce.interop`` maps mace weights onto it with a linear solve.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import torch

from equiforce.o3.irreps import Irrep, Irreps, block_slices, check_layout
from equiforce.o3.wigner import wigner_3j

__all__ = [
    "SymmetricContractionDescriptor",
    "coupling_paths",
    "monomial_coefficients",
    "symmetric_basis",
    "symmetric_monomials",
]

_INDEPENDENT = 1e-8  # Gram–Schmidt residual, relative to the path's norm, to count as new


@dataclass(frozen=True)
class SymmetricContractionDescriptor:
    """MACE's symmetric contraction: per-channel polynomial of degree <= ``correlation``.

    Attributes:
        irreps_in: ``C x ir_1 + C x ir_2 + ...``, all with the same multiplicity ``C``.
        irreps_out: ``C x ir`` blocks (distinct irreps), the same ``C``.
        correlation: highest polynomial degree (body order - 1), 1..3.
        layout: order inside the output's blocks (``o3.irreps.LAYOUTS``); the input is
            ``(n, C, coupling_irreps.dim)`` in either.
        num_channels: derived ``C``.
        coupling_irreps: derived ``ir_1 + ir_2 + ...`` with multiplicity 1.
    """

    irreps_in: Irreps
    irreps_out: Irreps
    correlation: int
    layout: str = "mul_ir"
    num_channels: int = field(init=False)
    coupling_irreps: Irreps = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "irreps_in", Irreps(self.irreps_in))
        object.__setattr__(self, "irreps_out", Irreps(self.irreps_out))
        check_layout(self.layout)
        muls = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(muls) != 1:
            raise ValueError(
                f"symmetric contraction needs one multiplicity, got {self.irreps_in} -> "
                f"{self.irreps_out}"
            )
        if not 1 <= self.correlation <= 3:
            raise ValueError(f"correlation must be 1, 2 or 3, got {self.correlation}")
        object.__setattr__(self, "num_channels", muls.pop())
        object.__setattr__(self, "coupling_irreps", Irreps([(1, ir) for _, ir in self.irreps_in]))

    def basis(self, i_out: int, nu: int) -> torch.Tensor:
        """Coefficients of output block ``i_out`` at degree ``nu`` on degree-``nu`` monomials.

        Returns:
            (n_monomials, ir_out.dim, n_weights) float64; ``n_weights`` may be 0.
        """
        return symmetric_basis(self.coupling_irreps, self.irreps_out[i_out].ir, nu)


def symmetric_monomials(dim: int, nu: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct monomials of degree ``nu`` in ``dim`` variables, lexicographic order.

    Returns:
        ``monomials`` (n_monomials, nu) int64 with non-decreasing rows, and ``multiplicity``
        (n_monomials,) float64, the number of index orderings giving each monomial.
    """
    rows = list(itertools.combinations_with_replacement(range(dim), nu))
    monomials = torch.tensor(rows, dtype=torch.long).reshape(len(rows), nu)
    counts = [
        math.factorial(nu) / math.prod(math.factorial(row.count(i)) for i in set(row))
        for row in rows
    ]
    return monomials, torch.tensor(counts, dtype=torch.float64)


def coupling_paths(irreps: Irreps, ir_out: Irrep, nu: int) -> list[torch.Tensor]:
    """All iterated couplings of ``nu`` copies of ``irreps`` (multiplicity 1) into ``ir_out``.

    Returns:
        list of (ir_out.dim, d, ..., d) float64 tensors (``nu`` input axes, d = irreps.dim),
        in a deterministic order.
    """
    dim, lmax_in = irreps.dim, max(ir.l for _, ir in irreps)
    slices = block_slices(irreps)
    level = []
    for (_, ir), sl in zip(irreps, slices, strict=True):
        start = torch.zeros(ir.dim, dim, dtype=torch.float64)
        start[:, sl] = torch.eye(ir.dim, dtype=torch.float64)
        level.append((ir, start))
    for step in range(2, nu + 1):
        remaining = nu - step
        new_level = []
        for ir_left, left in level:
            for (_, ir), sl in zip(irreps, slices, strict=True):
                for ir_new in ir_left * ir:
                    if abs(ir_new.l - ir_out.l) > remaining * lmax_in:
                        continue
                    if remaining == 0 and ir_new != ir_out:
                        continue
                    coupling = wigner_3j(ir_left.l, ir.l, ir_new.l) * math.sqrt(ir_new.dim)
                    block = torch.einsum("abk,a...->k...b", coupling, left)
                    path = torch.zeros(*block.shape[:-1], dim, dtype=torch.float64)
                    path[..., sl] = block
                    new_level.append((ir_new, path))
        level = new_level
    return [path for ir, path in level if ir == ir_out]


def _symmetrize(tensor: torch.Tensor, nu: int) -> torch.Tensor:
    """Average over permutations of the ``nu`` input axes (axes 1..nu)."""
    rest = list(range(nu + 1, tensor.dim()))
    perms = list(itertools.permutations(range(1, nu + 1)))
    return sum(tensor.permute(0, *perm, *rest) for perm in perms) / len(perms)


def monomial_coefficients(tensor: torch.Tensor, nu: int) -> torch.Tensor:
    """Coefficients on distinct monomials of the symmetric part of a coupling tensor.

    Args:
        tensor: (D, d, ..., d, K) with ``nu`` input axes of size d.
        nu: polynomial degree.

    Returns:
        (n_monomials, D, K): ``sum_i tensor[o, i_1..i_nu, k] x_i1..x_inu`` equals
        ``sum_m out[m, o, k] * prod(x[monomials[m]])`` for every x.
    """
    dim = tensor.shape[1]
    monomials, multiplicity = symmetric_monomials(dim, nu)
    symmetric = _symmetrize(tensor, nu)
    on_monomials = symmetric[(slice(None), *monomials.T)]  # (D, n_monomials, K)
    return on_monomials.permute(1, 0, 2) * multiplicity[:, None, None]


def symmetric_basis(irreps: Irreps, ir_out: Irrep, nu: int) -> torch.Tensor:
    """Orthogonal basis of symmetric equivariant degree-``nu`` maps ``irreps -> ir_out``.

    Returns:
        (n_monomials, ir_out.dim, n_weights) float64 coefficients on
        ``symmetric_monomials(irreps.dim, nu)``; a fresh copy on every call.
    """
    return _symmetric_basis(Irreps(irreps), Irrep(ir_out), nu).clone()


@functools.lru_cache(maxsize=None)
def _symmetric_basis(irreps: Irreps, ir_out: Irrep, nu: int) -> torch.Tensor:
    # cached: every layer of a model (and a conversion) asks for the same bases
    paths = coupling_paths(irreps, ir_out, nu)
    basis = torch.zeros(0, ir_out.dim * irreps.dim**nu, dtype=torch.float64)
    for path in paths:
        vector = _symmetrize(path, nu).flatten()
        for _ in range(2):  # twice: one Gram–Schmidt pass loses orthogonality
            vector = vector - basis.T @ (basis @ vector)
        if vector.norm() > _INDEPENDENT * path.norm():
            basis = torch.cat([basis, (vector / vector.norm())[None]], dim=0)
    if len(basis) == 0:
        n_monomials = math.comb(irreps.dim + nu - 1, nu)
        return torch.zeros(n_monomials, ir_out.dim, 0, dtype=torch.float64)
    full = basis.T.reshape(ir_out.dim, *([irreps.dim] * nu), len(basis))
    return monomial_coefficients(full * math.sqrt(ir_out.dim), nu)
