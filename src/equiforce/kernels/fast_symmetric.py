"""Fast executor of MACE's symmetric contraction: weights folded first, Horner on the last factor.

Same parameters (``weights.{o}``, (n_types, n_weights_o, C)) as
``reference.SymmetricContraction``. Per channel c and species t the contraction is a
polynomial of degree <= 3 in the d coupling components of ``x[n, c, :]``. This executor

1. folds the weights into the basis once per call, ``P[c, (t, i), m] = sum_k
   U[m, i, k] W[t, k, c]`` (independent of the number of atoms);
2. builds only the quadratic monomials ``x_a x_b`` (a <= b) that some basis element uses,
   directly or as the first two factors of a cubic one (for 0e+1o+2e+3o -> 0e+1o: 123 of
   136), from a (C, d, n) channel-major copy of x (factors picked by a one-hot GEMM);
3. evaluates the polynomial with batched GEMMs over channels: linear and
   quadratic terms as ``P1 @ x + P2 @ quad``, cubic terms by Horner on their largest
   factor, ``sum_k x_k * (P3_k @ quad)`` with the d GEMMs stacked into one
   ``(C, d * out_dim, n_pairs) @ (C, n_pairs, n)``;
4. only for each atom's own species: atoms are sorted by species once and each species'
   polynomial runs on its contiguous block. Under symbolic tracing (``make_fx``, as
   ``models.compile`` does, or Dynamo) those block sizes would depend on the data, so
   there every species' polynomial runs on every atom and a one-hot mask keeps each
   atom's own (``n_types`` times the GEMM work; shapes depend on the atom count only).

On CPU in float32/float64 (C++ kernels built; eager, and under ``make_fx``, which traces
them as opaque operators: an exported package calls them too) the polynomial runs instead as
the kernels of ``symmetric_ops`` on the monomials some output uses (``x``, the ``pairs``,
the ``cubes``: 16 + 123 + 355 for the first MACE-128 layer), each atom with its own
species' coefficients, with the weights folded into a (n_types, K, C) tensor by one einsum
per output (``kernel_coefficients``), one row per ``terms`` entry: the (output component,
monomial) pairs with a non-zero basis coefficient (410 of the 4 x 494 of that layer, whose
monomials each feed one output component); forces and the parameter
gradients of a force loss stay in those kernels (second derivatives; third derivatives take
a plain-torch path). Elsewhere (other devices and dtypes, Dynamo) the plain-torch path
above runs.

The cubic monomials (816, or the 355 used) are never materialised, nor per-atom weights;
every step of the plain-torch path is a torch op (any grad order). Support: any device and
floating dtype; deterministic on CPU. The eager per-species split reads the species counts
(a host sync on GPU). ``math_dtype`` (None: the weights') is the dtype of the polynomial;
the output comes back in the input dtype.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from equiforce.kernels import split_cat, symmetric_ops
from equiforce.kernels.column_permutation import channel_last_permutation, permute_columns
from equiforce.kernels.constants import ExactConstants
from equiforce.kernels.extension import kernel_ops_apply
from equiforce.o3.symmetric import SymmetricContractionDescriptor, symmetric_monomials

__all__ = ["FastSymmetricContraction"]

_ZERO = 1e-12  # basis coefficients below this are rounding noise of the Gram–Schmidt


class FastSymmetricContraction(ExactConstants):
    """Per-channel, per-species equivariant polynomial (see module docstring).

    Buffers (not saved): ``pairs`` (2, n_pairs) int64, the quadratic monomials built,
    ``cubes`` (2, n_cubes) int64 ``[largest factor, pair]`` of the cubic ones used,
    ``terms`` (2, K) int64 ``[output component; monomial]`` of the kernels' coefficient rows
    (monomials in the order x, pairs, cubes; sorted by output component, then monomial),
    ``term_basis_{o}`` (K_o, n_weights_o) the basis coefficients of output o's terms, and
    ``pair_factors`` (2 * n_pairs, d) their one-hot factor rows;
    coefficients per output o, block-diagonal in (degree, weight): ``linear_{o}``
    (d, ir_o.dim, n_weights_o), ``quadratic_{o}`` (n_pairs, ...), ``cubic_{o}``
    (d, n_pairs, ...) indexed by (largest factor, pair of the other two).

    Args:
        descriptor: what to compute.
        n_types: number of species.
        generator: random source for the initial weights (as the reference executor).
        math_dtype: dtype of the polynomial (None: the weights').
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(
        self,
        descriptor: SymmetricContractionDescriptor,
        n_types: int,
        generator: torch.Generator,
        math_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.n_types = n_types
        self.math_dtype = math_dtype
        channels, dim = descriptor.num_channels, descriptor.coupling_irreps.dim
        n_outputs = len(descriptor.irreps_out)
        bases = [
            [descriptor.basis(o, nu) for nu in range(1, descriptor.correlation + 1)]
            for o in range(n_outputs)
        ]
        pairs = _pairs(dim, bases)
        self.register_buffer("pairs", pairs, persistent=False)
        # one-hot rows picking the two factors of each pair: a GEMM instead of an
        # index_select along the component axis, whose backward (index_add along a
        # middle axis) is slow on CPU
        factors = torch.zeros(2 * pairs.shape[1], dim, dtype=torch.float64)
        factors[torch.arange(2 * pairs.shape[1]), pairs.reshape(-1)] = 1.0
        self.register_constant("pair_factors", factors)
        self.weights = nn.ParameterList()
        for o in range(n_outputs):
            init = [
                torch.randn(n_types, b.shape[2], channels, generator=generator, dtype=torch.float64)
                / max(b.shape[2], 1)
                for b in bases[o]
            ]
            self.weights.append(nn.Parameter(torch.cat(init, dim=1)))
            basis = _horner_basis(dim, pairs, bases[o])
            n_pairs = pairs.shape[1]
            cubic = basis[dim + n_pairs :].reshape(dim, n_pairs, *basis.shape[1:])
            self.register_constant(f"linear_{o}", basis[:dim].clone())
            self.register_constant(f"quadratic_{o}", basis[dim : dim + n_pairs].clone())
            self.register_constant(f"cubic_{o}", cubic.clone())
        cubes = _cubes(dim, pairs, bases)
        self.register_buffer("cubes", cubes, persistent=False)
        terms, offset = [], 0
        for o in range(n_outputs):
            linear, quadratic = getattr(self, f"linear_{o}"), getattr(self, f"quadratic_{o}")
            cubic = getattr(self, f"cubic_{o}")[cubes[0], cubes[1]]
            monomial = torch.cat([linear, quadratic, cubic])  # (M, ir_o.dim, n_weights_o)
            component, row = (monomial.abs() > _ZERO).any(dim=2).T.nonzero().T
            terms.append(torch.stack([component + offset, row]))
            self.register_constant(f"term_basis_{o}", monomial[row, component].clone())
            offset += monomial.shape[1]
        self.register_buffer("terms", torch.cat(terms, dim=1).contiguous(), persistent=False)
        self.out_dim = offset
        if descriptor.layout == "mul_ir":  # the output, permuted from channel-last
            perm, inverse = channel_last_permutation(descriptor.irreps_out)
            self.register_buffer("out_perm", perm, persistent=False)
            self.register_buffer("out_inverse", inverse, persistent=False)

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor) -> torch.Tensor:
        """Evaluate the polynomial.

        Args:
            x: (n, C, d) features, d = coupling_irreps.dim.
            atom_type: (n,) int64.

        Returns:
            (n, irreps_out.dim) in ``descriptor.layout``.
        """
        io_dtype = x.dtype
        dtype = self.math_dtype or self.weights[0].dtype
        n = x.shape[0]
        weights = [w.to(dtype) for w in self.weights]
        compiling = torch.compiler.is_compiling()
        if kernel_ops_apply(x.device, dtype) and not compiling:  # eager, make_fx: opaque ops
            out = self._kernels(x.to(dtype), atom_type, self.kernel_coefficients(weights))
        elif compiling or not isinstance(n, int):
            out = self._every_species(x.to(dtype), atom_type, weights)
        else:
            out = self._species_blocks(x.to(dtype), atom_type, weights)
        return self.output_layout(out).to(io_dtype)

    def output_layout(self, out: torch.Tensor) -> torch.Tensor:
        """(n, C, out_dim) -> (n, irreps_out.dim) in ``descriptor.layout`` (no copy for
        ``ir_mul`` when ``out`` is the transposed view of a channel-last tensor)."""
        flat = out.transpose(1, 2).reshape(out.shape[0], -1)  # (n, out_dim * C) channel-last
        if self.descriptor.layout == "ir_mul":
            return flat
        return permute_columns(flat, self.out_inverse, self.out_perm)

    def kernel_coefficients(
        self, weights: list[torch.Tensor], bases: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The weights folded into the kernels' basis: (n_types, K, C), one row per
        ``terms`` entry; in the dtype of ``weights``.

        Args:
            weights: per output, (n_types, n_weights_o, C).
            bases: per output, the (K_o, n_weights_o) basis of its terms; None: the
                ``term_basis_{o}`` buffers.
        """
        if bases is None:
            bases = [getattr(self, f"term_basis_{o}") for o in range(len(weights))]
        return split_cat.cat(
            [
                torch.einsum("kw,swc->skc", basis.to(w.dtype), w)
                for basis, w in zip(bases, weights, strict=True)
            ],
            dim=1,
        )

    def _kernels(
        self, x: torch.Tensor, atom_type: torch.Tensor, folded: torch.Tensor
    ) -> torch.Tensor:
        """On CPU: the C++ kernels of ``symmetric_ops`` on the used monomials, with the
        ``kernel_coefficients`` ``folded``. Returns (n, C, out_dim)."""
        table = symmetric_ops.MonomialTable(
            atom_type, self.pairs, self.cubes, self.terms, self.out_dim
        )
        y = symmetric_ops.contract(folded, x.transpose(1, 2).contiguous(), table)  # (n, out_dim, C)
        return y.transpose(1, 2)

    def _species_blocks(
        self, x: torch.Tensor, atom_type: torch.Tensor, weights: list[torch.Tensor]
    ) -> torch.Tensor:
        """Eager: atoms sorted by species, each species' polynomial on its own block.

        Reads the species counts (block sizes depend on the data). Returns (n, C, out_dim).
        """
        order = torch.argsort(atom_type, stable=True)
        counts = torch.bincount(atom_type, minlength=self.n_types).tolist()
        variables = x[order].permute(1, 2, 0).contiguous()  # (C, d, n)
        parts = [
            self._polynomial([w[t : t + 1] for w in weights], block)[:, 0]
            for t, block in enumerate(variables.split(counts, dim=2))
            if counts[t] > 0
        ]
        sorted_out = torch.cat(parts, dim=2)  # (C, out_dim, n), atoms in ``order``
        return sorted_out.permute(2, 0, 1)[torch.argsort(order)]

    def _every_species(
        self, x: torch.Tensor, atom_type: torch.Tensor, weights: list[torch.Tensor]
    ) -> torch.Tensor:
        """Traced (symbolic atom count): every species' polynomial on every atom, own kept.

        Shapes depend only on n, so ``make_fx`` keeps them symbolic; the GEMMs do
        ``n_types`` times the eager work. Returns (n, C, out_dim).
        """
        variables = x.permute(1, 2, 0)  # (C, d, n)
        every = self._polynomial(weights, variables)  # (C, n_types, out_dim, n)
        own = torch.nn.functional.one_hot(atom_type, self.n_types).T.to(x.dtype)  # (n_types, n)
        return (every * own[:, None, :]).sum(dim=1).permute(2, 0, 1)

    def _fold(self, name: str, weights: list[torch.Tensor], equation: str) -> torch.Tensor:
        """Coefficients of one part (linear, quadratic, cubic) for S species' weights."""
        return torch.cat(
            [
                torch.einsum(equation, getattr(self, f"{name}_{o}").to(w.dtype), w)
                for o, w in enumerate(weights)
            ],
            dim=-2,
        )

    def _polynomial(self, weights: list[torch.Tensor], variables: torch.Tensor) -> torch.Tensor:
        """S species' polynomials on the same m atoms.

        Weights (S, n_weights_o, C) per output, variables (C, d, m) -> (C, S, out_dim, m).
        The weights are folded into each part separately (no slices of one big folded tensor,
        whose backward would zero-fill it once per slice).
        """
        channels, dim, m = variables.shape
        species = weights[0].shape[0]
        linear = self._fold("linear", weights, "mik,skc->csim")  # (C, S, out_dim, d)
        terms = torch.bmm(linear.reshape(channels, -1, dim), variables)
        if self.pairs.shape[1] == 0:
            return terms.reshape(channels, species, -1, m)
        first, second = torch.matmul(self.pair_factors.to(variables.dtype), variables).chunk(2, 1)
        quadratic = first * second  # (C, n_pairs, m)
        folded = self._fold("quadratic", weights, "mik,skc->csim")
        terms = terms + torch.bmm(folded.reshape(channels, -1, folded.shape[3]), quadratic)
        terms = terms.reshape(channels, species, -1, m)
        if self.descriptor.correlation < 3:
            return terms
        cubic = self._fold("cubic", weights, "jpik,skc->csjip")  # (C, S, d, out_dim, n_pairs)
        partial = torch.bmm(cubic.reshape(channels, -1, cubic.shape[4]), quadratic)
        partial = partial.reshape(channels, species, dim, -1, m) * variables[:, None, :, None]
        return terms + partial.sum(dim=2)


def _used(basis: torch.Tensor) -> torch.Tensor:
    """(n_monomials,) bool: rows of a basis with a non-zero coefficient."""
    if basis.shape[2] == 0:
        return torch.zeros(basis.shape[0], dtype=torch.bool)
    return (basis.abs() > _ZERO).flatten(1).any(dim=1)


def _pairs(dim: int, bases: list[list[torch.Tensor]]) -> torch.Tensor:
    """(2, n_pairs) quadratic monomials (a <= b) used directly or as a cubic prefix."""
    wanted: set[tuple[int, int]] = set()
    for per_degree in bases:
        if len(per_degree) >= 2:
            rows = symmetric_monomials(dim, 2)[0][_used(per_degree[1])]
            wanted |= {tuple(r) for r in rows.tolist()}
        if len(per_degree) >= 3:
            rows = symmetric_monomials(dim, 3)[0][_used(per_degree[2])]
            wanted |= {tuple(r[:2]) for r in rows.tolist()}
    return torch.tensor(sorted(wanted), dtype=torch.long).reshape(-1, 2).T.contiguous()


def _cubes(dim: int, pairs: torch.Tensor, bases: list[list[torch.Tensor]]) -> torch.Tensor:
    """(2, n_cubes) cubic monomials ``x_a x_b x_c`` (a <= b <= c) some output uses, as rows
    ``[c, index of the pair (a, b) in pairs]``, in lexicographic order of (a, b, c)."""
    position = {pair: i for i, pair in enumerate(map(tuple, pairs.T.tolist()))}
    wanted: set[tuple[int, int, int]] = set()
    for per_degree in bases:
        if len(per_degree) >= 3:
            rows = symmetric_monomials(dim, 3)[0][_used(per_degree[2])]
            wanted |= {tuple(r) for r in rows.tolist()}
    cubes = [[c, position[(a, b)]] for a, b, c in sorted(wanted)]
    return torch.tensor(cubes, dtype=torch.long).reshape(-1, 2).T.contiguous()


def _horner_basis(dim: int, pairs: torch.Tensor, per_degree: list[torch.Tensor]) -> torch.Tensor:
    """(d + P + d * P, ir.dim, K) coefficients: linear, quadratic, cubic as (largest factor, pair).

    A cubic monomial ``x_a x_b x_c`` (a <= b <= c) sits at row ``d + P + c * P + pair(a, b)``.
    """
    n_pairs = pairs.shape[1]
    ir_dim = per_degree[0].shape[1]
    sizes = [b.shape[2] for b in per_degree]
    out = torch.zeros(dim + n_pairs + dim * n_pairs, ir_dim, sum(sizes), dtype=torch.float64)
    out[:dim, :, : sizes[0]] = per_degree[0]
    position = {pair: i for i, pair in enumerate(map(tuple, pairs.T.tolist()))}
    for nu, basis in enumerate(per_degree[1:], start=2):
        columns = slice(sum(sizes[: nu - 1]), sum(sizes[:nu]))
        monomials = symmetric_monomials(dim, nu)[0].tolist()
        for row in _used(basis).nonzero().flatten().tolist():
            index = monomials[row]
            pair = position[tuple(index[:2])]
            target = dim + pair if nu == 2 else dim + n_pairs + index[2] * n_pairs + pair
            out[target, :, columns] = basis[row]
    return out
