"""Reference executors (plain PyTorch) for the descriptors in ``equiforce.o3``.

These are the ground truth for faster backends, which must keep the same parameter names,
shapes and layout.

Modules are created in float64; ``.to(dtype)`` moves parameters and coefficient buffers.
``math_dtype`` (None: the parameter dtype, or the input dtype without parameters) is the
dtype the contraction runs in; outputs come back in the input dtype.
Support: float32 and float64 (any floating dtype torch's matmul supports as math dtype);
any device; any grad order (forces and force training need double backward); deterministic
on CPU (``index_add`` on CUDA is not); plain tensor ops, so ``torch.compile`` and
``torch.export`` can trace them.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from equiforce.kernels.constants import ExactConstants
from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.irreps import flatten_block, unflatten_block
from equiforce.o3.symmetric import SymmetricContractionDescriptor, symmetric_monomials
from equiforce.o3.wigner import wigner_3j

__all__ = ["ChannelwiseTensorProduct", "Linear", "SymmetricContraction"]


class Linear(nn.Module):
    """Equivariant linear map of a ``LinearDescriptor`` (shared or per-species weights).

    Parameters: ``weight`` (weight_numel,) float64, e3nn's flat layout, initialised N(0, 1).

    Args:
        descriptor: what to compute.
        generator: random source for the initial weights.
        math_dtype: dtype of the contraction (None: the weight's).
    """

    op_class: ClassVar[str] = "linear"  # equiforce.precision.OP_CLASSES

    def __init__(
        self,
        descriptor: LinearDescriptor,
        generator: torch.Generator,
        math_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        weight = torch.randn(descriptor.weight_numel, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(weight)
        self._in_dims = [mul * ir.dim for mul, ir in descriptor.irreps_in]

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the map.

        Args:
            x: (n, irreps_in.dim) in ``descriptor.layout``.
            atom_type: (n,) int64 species index; required iff ``n_types > 0``.

        Returns:
            (n, irreps_out.dim) in ``descriptor.layout``.
        """
        desc = self.descriptor
        io_dtype = x.dtype
        weight = self.weight.to(self.math_dtype or self.weight.dtype)
        x = x.to(weight.dtype)
        outputs: list[torch.Tensor | None] = [None] * len(desc.irreps_out)
        blocks = x.split(self._in_dims, dim=1)  # split, not slicing: cheaper backward
        for path in desc.paths:
            block = unflatten_block(blocks[path.i_in], path.mul_in, path.ir_dim, desc.layout)
            if desc.n_types == 0:
                size = path.mul_in * path.mul_out
                w = weight[path.weight_offset : path.weight_offset + size]
                y = torch.einsum("niu,uw->niw", block, w.reshape(path.mul_in, path.mul_out))
            else:
                size = path.mul_in * desc.n_types * path.mul_out
                w = weight[path.weight_offset : path.weight_offset + size]
                w = w.reshape(path.mul_in, desc.n_types, path.mul_out)[:, atom_type]
                y = torch.einsum("niu,unw->niw", block, w)
            y = path.scale * y
            previous = outputs[path.i_out]
            outputs[path.i_out] = y if previous is None else previous + y
        flat = []
        for out, (mul, ir) in zip(outputs, desc.irreps_out, strict=True):
            if out is None:
                out = x.new_zeros(x.shape[0], ir.dim, mul)
            flat.append(flatten_block(out, desc.layout))
        return torch.cat(flat, dim=1).to(io_dtype)


class ChannelwiseTensorProduct(ExactConstants):
    """Edge tensor product: gather neighbour features, couple with edge SH, scatter-sum.

    ``out[r, u, k] = sum_{edges e -> r} sum_paths scale * w[e, path, u] *
    sum_ij C[i, j, k] x[s(e), u, i] sh[e, j]`` with ``C = wigner_3j(l1, l2, l_out)``.
    No parameters: the per-edge weights come from a radial network.

    Args:
        descriptor: what to compute.
        math_dtype: dtype of the contraction (None: the node features').
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(self, descriptor: ChannelwiseTPDescriptor, math_dtype: torch.dtype | None = None):
        super().__init__()
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        self._dims1 = [mul * ir.dim for mul, ir in descriptor.irreps_in1]
        self._dims2 = [mul * ir.dim for mul, ir in descriptor.irreps_in2]
        for index, path in enumerate(descriptor.paths):
            coupling = wigner_3j(path.l1, path.l2, path.l_out) * path.scale
            self.register_constant(f"coupling_{index}", coupling)

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        weight_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Messages summed onto receivers.

        Args:
            node_feats: (n_nodes, irreps_in1.dim) in ``descriptor.layout``.
            edge_attrs: (n_edges, irreps_in2.dim), e.g. spherical harmonics.
            edge_weights: (n_rows, weight_numel) path weights, one row per edge unless
                ``weight_row`` is given.
            sender: (n_edges,) int64 node whose features are sent.
            receiver: (n_edges,) int64 node that sums the messages.
            weight_row: (n_edges,) int64 row of ``edge_weights`` of each edge (edges that
                share weights, e.g. the two directions of a bond), or None.

        Returns:
            (n_nodes, irreps_out.dim) in ``descriptor.layout``.
        """
        desc = self.descriptor
        io_dtype = node_feats.dtype
        dtype = self.math_dtype or io_dtype
        if weight_row is not None:
            edge_weights = edge_weights.index_select(0, weight_row)
        node_feats, edge_attrs, edge_weights = (
            t.to(dtype) for t in (node_feats, edge_attrs, edge_weights)
        )
        gathered = node_feats[sender]
        nodes = gathered.split(self._dims1, dim=1)
        attrs = edge_attrs.split(self._dims2, dim=1)
        weights = edge_weights.split([path.mul for path in desc.paths], dim=1)
        messages = [gathered.new_zeros(0)] * len(desc.paths)
        for index, path in enumerate(desc.paths):
            coupling = getattr(self, f"coupling_{index}").to(dtype)
            x1 = unflatten_block(nodes[path.i_in1], path.mul, 2 * path.l1 + 1, desc.layout)
            mixer = torch.einsum("ej,ijk->eik", attrs[path.i_in2], coupling)
            message = torch.einsum("eiu,eik->eku", x1, mixer) * weights[index][:, None, :]
            messages[path.i_out] = flatten_block(message, desc.layout)
        edge_out = torch.cat(messages, dim=1)
        summed = node_feats.new_zeros(node_feats.shape[0], edge_out.shape[1])
        return summed.index_add(0, receiver, edge_out).to(io_dtype)


class SymmetricContraction(ExactConstants):
    """Per-channel, per-species equivariant polynomial (MACE's product basis).

    For each output block o: ``out[n, c, :] = sum_k W_o[type_n, k, c] B_k(x[n, c, :])``
    where ``B_k`` runs over ``descriptor.basis(o, nu)`` for ``nu = 1..correlation``.

    Parameters: ``weights.{o}`` (n_types, n_weights_o, C) float64, the degree-1 weights
    first, then degree 2, 3; each degree's block is initialised N(0, 1) / its number of
    weights (as mace-torch does).

    Args:
        descriptor: what to compute.
        n_types: number of species.
        generator: random source for the initial weights.
        math_dtype: dtype of the contraction (None: the weights').
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
        channels = descriptor.num_channels
        self.n_outputs = len(descriptor.irreps_out)
        # per degree: columns of (block o, component, weight k); sizes[nu][o] = n_weights
        self.sizes: list[list[int]] = []
        for nu in range(1, descriptor.correlation + 1):
            bases = [descriptor.basis(o, nu) for o in range(self.n_outputs)]
            self.sizes.append([b.shape[2] for b in bases])
            flat = torch.cat([b.reshape(b.shape[0], -1) for b in bases], dim=1)
            self.register_constant(f"basis_{nu}", flat)
        dim = descriptor.coupling_irreps.dim
        self.starts = [_suffix_starts(dim, nu) for nu in range(1, descriptor.correlation + 1)]
        self.weights = nn.ParameterList()
        for o in range(self.n_outputs):
            blocks = [
                torch.randn(n_types, sizes[o], channels, generator=generator, dtype=torch.float64)
                / max(sizes[o], 1)
                for sizes in self.sizes
            ]
            self.weights.append(nn.Parameter(torch.cat(blocks, dim=1)))

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor) -> torch.Tensor:
        """Evaluate the polynomial.

        Args:
            x: (n, C, d) features, d = coupling_irreps.dim (the blocks in irreps order).
            atom_type: (n,) int64.

        Returns:
            (n, irreps_out.dim) in ``descriptor.layout``.
        """
        io_dtype = x.dtype
        dtype = self.math_dtype or self.weights[0].dtype
        x = x.to(dtype)
        n, channels = x.shape[0], x.shape[1]
        dims = [ir.dim for _, ir in self.descriptor.irreps_out]
        per_output: list[list[torch.Tensor]] = [[] for _ in range(self.n_outputs)]
        variables = x.split(1, dim=2)
        lower = x  # monomials of the previous degree, lexicographic order
        for nu, sizes in enumerate(self.sizes, start=1):
            basis = getattr(self, f"basis_{nu}").to(dtype)
            if nu == 1:
                features = x @ basis
            else:
                # monomials starting with x_i are x_i times the lower-degree monomials whose
                # first variable is >= i, a suffix; slices and a sum of matmuls keep the
                # double backward free of full-size zero fills
                groups = [
                    v * lower[:, :, s:] for v, s in zip(variables, self.starts[nu - 1], strict=True)
                ]
                rows = basis.split([g.shape[2] for g in groups], dim=0)
                features = sum(g @ r for g, r in zip(groups, rows, strict=True))
                if nu < len(self.sizes):
                    lower = torch.cat(groups, dim=2)
            blocks = features.split([d * k for d, k in zip(dims, sizes, strict=True)], dim=2)
            for o, block in enumerate(blocks):
                per_output[o].append(block.reshape(n, channels, dims[o], sizes[o]))
        outputs = []
        for o, blocks in enumerate(per_output):
            w = self.weights[o].to(dtype)[atom_type]
            out = torch.einsum("ncik,nkc->nic", torch.cat(blocks, dim=3), w)
            outputs.append(flatten_block(out, self.descriptor.layout))
        return torch.cat(outputs, dim=1).to(io_dtype)


def _suffix_starts(dim: int, nu: int) -> tuple[int, ...]:
    """Per variable i, the first degree-(nu-1) monomial whose first variable is >= i.

    In lexicographic order the degree-``nu`` monomials starting with ``x_i`` are ``x_i`` times
    the degree-(nu-1) monomials from that index on, in order. Empty for ``nu == 1``.
    """
    if nu == 1:
        return ()
    first = symmetric_monomials(dim, nu - 1)[0][:, 0].tolist()
    return tuple(first.index(i) for i in range(dim))
