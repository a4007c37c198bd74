"""Allegro's scalar MLPs and per-irrep channel weighting (nequip ``ScalarMLPFunction`` math).

Each layer is ``h @ (W * alpha)`` without bias, ``W`` uniform with unit variance and
``alpha = gain / sqrt(fan_in)``, where ``gain = sqrt(2)`` for layers after a nonlinearity and
1 otherwise; the nonlinearity (plain, not normalised) sits between layers. Bias-free layers
and ``act(0) = 0`` keep a pair whose radial basis vanishes at exactly zero output, which is
what makes Allegro strictly local.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, Sequence

import torch
from torch import nn

from equiforce.kernels.allegro_mlp import scaled_mlp, use_mlp_kernel
from equiforce.kernels.allegro_tensor_track import (
    environment,
    use_tensor_track_kernels,
    weighted_channels,
)
from equiforce.kernels.tracing import traced
from equiforce.nn.scaled_mlp import scaled_mlp_forward
from equiforce.o3.irreps import Irreps

NONLINEARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": nn.functional.silu,
    "mish": nn.functional.mish,
    "gelu": nn.functional.gelu,
}


class AllegroMLP(nn.Module):
    """Bias-free MLP ``sizes[0] -> ... -> sizes[-1]``.

    Parameters: ``weights.{k}`` (sizes[k], sizes[k + 1]) float64.

    Precision: op class ``mlp``. ``math_dtype`` (None: the parameter dtype; set by
    ``equiforce.precision.apply_policy``) is the dtype of the matmuls and nonlinearities: the
    input and each scaled weight are cast to it, and the output is cast back to the input
    dtype (what ``torch.autocast`` does to this net).

    ``kernel_library`` (set by ``equiforce.kernels.use_backend``; True when built): run the
    net as the kernel library's op where that applies, else in torch ops.

    Args:
        sizes: layer widths, input first, at least two entries.
        nonlinearity: key of ``NONLINEARITIES``, or None for a (deep) linear map.
        generator: random source for the initial weights.
    """

    op_class: ClassVar[str] = "mlp"

    def __init__(self, sizes: Sequence[int], nonlinearity: str | None, generator: torch.Generator):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
        if nonlinearity is not None and nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"unknown nonlinearity {nonlinearity!r}; known: {list(NONLINEARITIES)}"
            )
        self.sizes = tuple(int(s) for s in sizes)
        self.nonlinearity = nonlinearity
        bound = math.sqrt(3.0)
        self.weights = nn.ParameterList(
            nn.Parameter(
                (2.0 * torch.rand(h_in, h_out, generator=generator, dtype=torch.float64) - 1.0)
                * bound
            )
            for h_in, h_out in zip(self.sizes[:-1], self.sizes[1:], strict=True)
        )
        gain = 1.0 if nonlinearity is None else math.sqrt(2.0)
        self.alphas = tuple(
            (1.0 if k == 0 else gain) / math.sqrt(h_in) for k, h_in in enumerate(self.sizes[:-1])
        )
        self.math_dtype: torch.dtype | None = None
        self.kernel_library = True

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Apply the net.

        Args:
            x: (n, sizes[0]), or its column blocks (n, d_k) with ``sum d_k = sizes[0]``: the
                net of their concatenation, without forming it (``scaled_mlp_forward``).

        Returns:
            (n, sizes[-1]), dtype of ``x``.
        """
        blocks = [x] if isinstance(x, torch.Tensor) else x
        # the ParameterList's own dict: its __iter__ costs ~2 us per weight, a tenth of a
        # 182-pair molecule's layer
        weights = list(self.weights._parameters.values())
        if (
            self.kernel_library
            and self.nonlinearity in ("silu", None)
            and self.math_dtype in (None, blocks[0].dtype)
            and use_mlp_kernel(blocks[0], weights[0])
        ):
            # training mode keeps the derivative graph (Potential's create_graph default):
            # recorded ops, whose double backward reuses the forward's intermediates
            silu = self.nonlinearity == "silu"
            return scaled_mlp(blocks, weights, self.alphas, silu, record=self.training)
        activation = None if self.nonlinearity is None else NONLINEARITIES[self.nonlinearity]
        scaled = [weight * alpha for weight, alpha in zip(weights, self.alphas, strict=True)]
        return scaled_mlp_forward(blocks, scaled, activation, self.math_dtype)


def spread_by_gathers(weights: torch.Tensor) -> bool:
    """Whether ``EdgeMajorWeightedChannels`` spreads its factors by column gathers (a trace:
    ``torch.compile``, or a tracer's tensor under ``make_fx``/``torch.export``) rather than
    by one-hot GEMMs (eager; see the class)."""
    return traced(weights)


class WeightedChannels(nn.Module):
    """``out[e, u, i] = basis[e, i] * w[e, u, irrep(i)]``: per-channel, per-irrep weights.

    No parameters; the weights come from the scalar track. ``kernel_library`` (set by
    ``equiforce.kernels.use_backend``; True when built): the kernel library's ops where they
    apply, else torch ops.

    Args:
        irreps: irreps of the basis (multiplicity 1 per block).
        mul: output channels.
    """

    def __init__(self, irreps: Irreps, mul: int):
        super().__init__()
        irreps = Irreps(irreps)
        self.mul = mul
        self.n_irreps = len(irreps)
        self.weight_numel = mul * self.n_irreps
        index = [k for k, (_, ir) in enumerate(irreps) for _ in range(ir.dim)]
        self.register_buffer("irrep_of", torch.tensor(index, dtype=torch.int64), persistent=False)
        self.kernel_library = True

    def forward(self, basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weight the basis.

        Args:
            basis: (n_edges, irreps.dim).
            weights: (n_edges, mul * n_irreps), channel-major.

        Returns:
            (n_edges, mul, irreps.dim), a view of a component-major ``(irreps.dim, n_edges,
            mul)`` tensor: each component is one contiguous row, the layout of the fast
            Allegro kernels (broadcasts over the short irrep axis are ~5x slower on CPU).
            One C++ op where it applies (``kernels.allegro_tensor_track.weighted_channels``).
        """
        if self.kernel_library and use_tensor_track_kernels(basis, weights):
            return weighted_channels(basis, weights, self.irrep_of, self.mul).permute(1, 2, 0)
        per_irrep = weights.reshape(-1, self.mul, self.n_irreps).permute(2, 0, 1)
        out = per_irrep.index_select(0, self.irrep_of) * basis.t().unsqueeze(-1)
        return out.permute(1, 2, 0)


class EdgeMajorWeightedChannels(WeightedChannels):
    """``WeightedChannels`` laid out for a sum over each atom's pairs (the environment).

    Eagerly both factors are spread to the output's columns by one-hot products (0/1
    matrices: exact in every dtype), ``(weights @ S_w) * (basis @ S_b)``: GEMMs whose backward
    is a GEMM. Against an ``index_select`` of the weights per component and a broadcast
    product (its backward an ``index_add`` and reductions over the broadcast axes) this ran
    1.6x faster (forward + gradients, 11,578 pairs of allegro-tiny, float32, one thread;
    inference on that 64-molecule batch 1.067x, on a 999-atom box 1.057x). A trace
    (``torch.export``, ``torch.compile``) records column gathers instead, which Inductor fuses
    with the product: the one-hot GEMMs multiply ``mul * n_irreps`` numbers per output where
    one is used (``allegro-big``: 192, 59 % of a float64 3BPA package's GEMM work). It is a
    tensor-product block
    for the precision policies (``op_class``): its products run in ``math_dtype`` when one
    is set (None: the inputs' promoted dtype).
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(self, irreps: Irreps, mul: int):
        super().__init__(irreps, mul)
        # column i * mul + u of the output takes weight column u * n_irreps + irrep(i) and
        # basis column i
        index = self.irrep_of.tolist()
        dim = len(index)
        weight_spread = torch.zeros(self.weight_numel, dim * mul, dtype=torch.float64)
        basis_spread = torch.zeros(dim, dim * mul, dtype=torch.float64)
        for i, k in enumerate(index):
            for u in range(mul):
                weight_spread[u * self.n_irreps + k, i * mul + u] = 1.0
                basis_spread[i, i * mul + u] = 1.0
        self.register_buffer("weight_spread", weight_spread, persistent=False)
        self.register_buffer("basis_spread", basis_spread, persistent=False)
        # the same spreads as column indices (traced): output column i * mul + u
        columns = [(u * self.n_irreps + k, i) for i, k in enumerate(index) for u in range(mul)]
        weight_column, basis_column = torch.tensor(columns, dtype=torch.int64).unbind(1)
        self.register_buffer("weight_column", weight_column.contiguous(), persistent=False)
        self.register_buffer("basis_column", basis_column.contiguous(), persistent=False)
        self.math_dtype: torch.dtype | None = None

    def forward(self, basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weight the basis.

        Args:
            basis: (n_edges, irreps.dim).
            weights: (n_edges, mul * n_irreps), channel-major.

        Returns:
            (n_edges, irreps.dim * mul) contiguous, ``[e, i * mul + u] = basis[e, i] *
            w[e, u, irrep(i)]``: one row per pair, so that ``index_add`` over pairs moves
            whole rows (per-component rows of ``mul`` numbers made it ~6x slower); the
            inputs' promoted dtype.
        """
        io_dtype = torch.promote_types(weights.dtype, basis.dtype)
        dtype = self.math_dtype or io_dtype
        weights, basis = weights.to(dtype), basis.to(dtype)
        if spread_by_gathers(weights):
            out = weights.index_select(1, self.weight_column)
            out = out * basis.index_select(1, self.basis_column)
        else:
            out = (weights @ self.weight_spread.to(dtype)) * (basis @ self.basis_spread.to(dtype))
        return out.to(io_dtype)

    def environment(
        self, basis: torch.Tensor, weights: torch.Tensor, centre: torch.Tensor, n_atoms: int
    ) -> torch.Tensor:
        """The weighted basis summed over each atom's pairs.

        Args:
            basis: (n_edges, irreps.dim).
            weights: (n_edges, mul * n_irreps), channel-major.
            centre: (n_edges,) int64 centre atom of each pair.
            n_atoms: atoms.

        Returns:
            (n_atoms, irreps.dim * mul), ``[n, i * mul + u] = sum_{e: centre[e] = n} basis[e,
            i] * w[e, u, irrep(i)]``, the inputs' promoted dtype. One C++ op where it
            applies (``kernels.allegro_tensor_track.environment``: no pair-sized
            intermediate), else ``forward`` and a scatter-add.
        """
        if (
            self.kernel_library
            and self.math_dtype in (None, basis.dtype)
            and use_tensor_track_kernels(basis, weights)
        ):
            return environment(basis, weights, self.irrep_of, centre, self.mul, n_atoms)
        per_pair = self(basis, weights)
        return per_pair.new_zeros(n_atoms, per_pair.shape[1]).index_add(0, centre, per_pair)
