"""Fast executor of MACE's symmetric contraction: sparse monomials, one GEMM per channel.

Same parameters (``weights.{o}``, (n_types, n_weights_o, C)) as
``reference.SymmetricContraction``. Per channel c and species t the contraction is a
polynomial in the d coupling components of ``x[n, c, :]``; this executor

1. keeps only the monomials that some basis element uses (for 0e+1o+2e+3o -> 0e+1o at
   correlation 3: 355 of 816 cubic and 51 of 136 quadratic ones; -> 0e: 77 and 16),
   built as row gathers of a (C, d, n) channel-major copy of x (quadratic ones as products
   of two variables, cubic ones as a quadratic times a variable);
2. folds the weights into the basis once per call, ``P[c, (t, i), m] = sum_k
   U[m, i, k] W[t, k, c]`` (small: independent of the number of atoms);
3. evaluates every species' polynomial with one batched GEMM over channels,
   ``(C, n_types * out_dim, M) @ (C, M, n)``, and keeps each atom's own species.

No (n, C, all monomials) tensor and no per-atom gathered weights; every step is a plain
torch op (any grad order). Support: any device and floating dtype; deterministic on CPU;
``torch.compile``/``torch.export`` friendly. ``math_dtype`` (None: the weights') is the
dtype of the polynomial; the output comes back in the input dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce.o3.symmetric import SymmetricContractionDescriptor, symmetric_monomials

__all__ = ["FastSymmetricContraction"]

_ZERO = 1e-12  # basis coefficients below this are rounding noise of the Gram–Schmidt


class FastSymmetricContraction(nn.Module):
    """Per-channel, per-species equivariant polynomial (see module docstring).

    Buffers (not saved): ``pairs`` (2, n_pairs) and ``cubic`` (2, n_cubic) int64 monomial
    recipes; ``basis_{o}`` (M, ir_o.dim, n_weights_o) coefficients on the kept monomials
    (linear, then quadratic, then cubic), block-diagonal in (degree, weight).

    Args:
        descriptor: what to compute.
        n_types: number of species.
        generator: random source for the initial weights (as the reference executor).
        math_dtype: dtype of the polynomial (None: the weights').
    """

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
            [descriptor.basis(o, nu) for o in range(n_outputs)]
            for nu in range(1, descriptor.correlation + 1)
        ]
        used = [_used_rows(per_output) for per_output in bases]
        pairs, cubic = _recipes(dim, used)
        rows = [torch.arange(dim)]
        if descriptor.correlation >= 2:
            rows.append(_row_index(symmetric_monomials(dim, 2)[0], pairs.T))
        if descriptor.correlation >= 3:
            monomials3 = symmetric_monomials(dim, 3)[0]
            triples = torch.cat([pairs.T[cubic[0]], cubic[1][:, None]], dim=1)
            rows.append(_row_index(monomials3, triples))
        self.register_buffer("pairs", pairs, persistent=False)
        self.register_buffer("cubic", cubic, persistent=False)
        self.weights = nn.ParameterList()
        for o in range(n_outputs):
            blocks = [per_output[o] for per_output in bases]
            sizes = [b.shape[2] for b in blocks]
            init = [
                torch.randn(n_types, k, channels, generator=generator, dtype=torch.float64)
                / max(k, 1)
                for k in sizes
            ]
            self.weights.append(nn.Parameter(torch.cat(init, dim=1)))
            self.register_buffer(f"basis_{o}", _block_basis(blocks, rows), persistent=False)
        self.out_dims = [ir.dim for _, ir in descriptor.irreps_out]

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor) -> torch.Tensor:
        """Evaluate the polynomial.

        Args:
            x: (n, C, d) features, d = coupling_irreps.dim.
            atom_type: (n,) int64.

        Returns:
            (n, irreps_out.dim) in e3nn layout.
        """
        io_dtype = x.dtype
        dtype = self.math_dtype or self.weights[0].dtype
        n, channels = x.shape[0], x.shape[1]
        variables = x.to(dtype).permute(1, 2, 0).contiguous()  # (C, d, n)
        monomials = [variables]
        if self.pairs.shape[1] > 0:
            quadratic = variables[:, self.pairs[0]] * variables[:, self.pairs[1]]
            monomials.append(quadratic)
            if self.cubic.shape[1] > 0:
                monomials.append(quadratic[:, self.cubic[0]] * variables[:, self.cubic[1]])
        stacked = torch.cat(monomials, dim=1)  # (C, M, n)
        folded = torch.cat(
            [
                torch.einsum("mik,tkc->ctim", getattr(self, f"basis_{o}").to(dtype), w.to(dtype))
                for o, w in enumerate(self.weights)
            ],
            dim=2,
        )  # (C, n_types, out_dim, M)
        out_dim = folded.shape[2]
        every_type = torch.bmm(folded.reshape(channels, -1, folded.shape[3]), stacked)
        every_type = every_type.reshape(channels, self.n_types, out_dim, n)
        index = atom_type.reshape(1, 1, 1, n).expand(channels, 1, out_dim, n)
        out = every_type.gather(1, index).reshape(channels, out_dim, n).permute(2, 0, 1)
        blocks = out.split(self.out_dims, dim=2)
        return torch.cat([b.reshape(n, -1) for b in blocks], dim=1).to(io_dtype)


def _used_rows(per_output: list[torch.Tensor]) -> torch.Tensor:
    """Monomial rows with a non-zero coefficient in any output's basis (sorted)."""
    mask = torch.zeros(per_output[0].shape[0], dtype=torch.bool)
    for basis in per_output:
        if basis.shape[2] > 0:
            mask |= (basis.abs() > _ZERO).flatten(1).any(dim=1)
    return mask.nonzero().flatten()


def _recipes(dim: int, used: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadratic monomials to build (2, n_pairs) and cubic ones as (pair, variable) (2, n)."""
    if len(used) < 2:
        empty = torch.zeros(2, 0, dtype=torch.long)
        return empty, empty
    quadratic = symmetric_monomials(dim, 2)[0][used[1]].tolist()
    cubic = symmetric_monomials(dim, 3)[0][used[2]].tolist() if len(used) > 2 else []
    pairs = sorted({tuple(q) for q in quadratic} | {tuple(c[:2]) for c in cubic})
    position = {pair: i for i, pair in enumerate(pairs)}
    recipe = [[position[tuple(c[:2])], c[2]] for c in cubic]
    pairs_t = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.contiguous()
    cubic_t = torch.tensor(recipe, dtype=torch.long).reshape(-1, 2).T.contiguous()
    return pairs_t, cubic_t


def _row_index(monomials: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Row of each wanted (non-decreasing) index tuple in the lexicographic monomial list."""
    lookup = {tuple(row): i for i, row in enumerate(monomials.tolist())}
    return torch.tensor([lookup[tuple(row)] for row in wanted.tolist()], dtype=torch.long)


def _block_basis(blocks: list[torch.Tensor], rows: list[torch.Tensor]) -> torch.Tensor:
    """(M, dim, K) coefficients on the kept monomials, block-diagonal over degrees."""
    n_rows = sum(len(r) for r in rows)
    n_weights = sum(b.shape[2] for b in blocks)
    out = torch.zeros(n_rows, blocks[0].shape[1], n_weights, dtype=torch.float64)
    row, column = 0, 0
    for basis, index in zip(blocks, rows, strict=True):
        out[row : row + len(index), :, column : column + basis.shape[2]] = basis[index]
        row, column = row + len(index), column + basis.shape[2]
    return out
