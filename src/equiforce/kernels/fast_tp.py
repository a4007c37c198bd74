"""Fast executor of the MACE edge convolution (``ChannelwiseTPDescriptor``).

Same contract and (empty) state dict as ``reference.ChannelwiseTensorProduct``. The product
is rewritten on sparse Clebsch–Gordan "triples" (path p, input component i, output component
k, with the coefficients summed over the spherical-harmonic component j):

    out[r, k, u] = sum_{e -> r} sum_t S[e, t] x[s(e), i_t, u] w[e, p_t, u],
    S = edge_attrs @ coupling        (n_edges, T), coupling (sh_dim, T) = scale * C[i, j, k]

so only non-zero coefficients are visited (closed forms for l <= 1 come out as the few
triples they have), the edge spherical harmonics are contracted once per edge, and on CPU the
gather -> product -> scatter runs as one C++ kernel per direction (``edge_ops``) without any
(n_edges x features) intermediate; its derivatives are the same kernels, to any order.

Support: CPU float32/float64 through the C++ kernels; other devices and dtypes (and CPU when
no compiler is available) through a plain-torch path over the same triples, which keeps
(n_edges, T, U) intermediates. Deterministic on CPU. ``math_dtype`` (None: the node
features' dtype) is the dtype of the contraction; the output comes back in the input dtype.
Node features must have one multiplicity across blocks (MACE's hidden irreps do).
``torch.compile`` sees the CPU kernels as opaque custom ops (``equiforce::cwtp_*``).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from equiforce.kernels import edge_ops
from equiforce.kernels.column_permutation import channel_last_permutation, permute_columns
from equiforce.kernels.constants import ExactConstants
from equiforce.kernels.extension import kernel_ops_apply
from equiforce.o3.descriptors import ChannelwiseTPDescriptor
from equiforce.o3.wigner import wigner_3j

__all__ = ["FastChannelwiseTensorProduct", "sparse_triples"]

_ZERO = 1e-12  # Clebsch–Gordan entries below this (relative to 1) are rounding noise


def sparse_triples(desc: ChannelwiseTPDescriptor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-zero (path, input component, output component) triples of a channel-wise TP.

    Returns:
        ``triples`` (T, 4) int64 ``[p, i, k, t]`` sorted by (p, i), and ``coupling``
        (irreps_in2.dim, T) float64 with ``coupling[j, t] = scale_p * C_p[i, j, k]``.
        Component indices count ``ir.dim`` per block (channels are a separate axis).
    """
    starts1 = _component_starts(desc.irreps_in1)
    starts2 = _component_starts(desc.irreps_in2)
    starts_out = _component_starts(desc.irreps_out)
    rows, columns = [], []
    for p, path in enumerate(desc.paths):
        cg = wigner_3j(path.l1, path.l2, path.l_out) * path.scale
        for i in range(cg.shape[0]):
            for k in range(cg.shape[2]):
                column = torch.zeros(desc.irreps_in2.dim, dtype=torch.float64)
                values = cg[i, :, k]
                if values.abs().max() <= _ZERO:
                    continue
                start = starts2[path.i_in2]
                column[start : start + cg.shape[1]] = torch.where(values.abs() > _ZERO, values, 0)
                rows.append([p, starts1[path.i_in1] + i, starts_out[path.i_out] + k, len(rows)])
                columns.append(column)
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4), torch.stack(columns, dim=1)


def _component_starts(irreps) -> list[int]:
    starts, total = [], 0
    for _, ir in irreps:
        starts.append(total)
        total += ir.dim
    return starts


class FastChannelwiseTensorProduct(ExactConstants):
    """Gather -> channel-wise TP with edge SH -> scatter-sum, on sparse CG triples.

    Buffers (not saved): ``coupling`` (sh_dim, T), ``triples`` and ``swapped`` (T, 4) int64.

    Args:
        descriptor: what to compute.
        math_dtype: dtype of the contraction (None: the node features').
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(self, descriptor: ChannelwiseTPDescriptor, math_dtype: torch.dtype | None = None):
        super().__init__()
        muls = {mul for mul, _ in descriptor.irreps_in1}
        if len(muls) != 1:
            raise ValueError(
                f"fast channel-wise TP needs one multiplicity: {descriptor.irreps_in1}"
            )
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        self.channels = muls.pop()
        self.n_paths = len(descriptor.paths)
        self.d_out = sum(ir.dim for _, ir in descriptor.irreps_out)
        triples, coupling = sparse_triples(descriptor)
        order = sorted(range(len(triples)), key=lambda t: (triples[t, 0], triples[t, 2]))
        swapped = triples[order][:, [0, 2, 1, 3]]
        self.register_constant("coupling", coupling)
        self.register_buffer("triples", triples, persistent=False)
        self.register_buffer("swapped", swapped.contiguous(), persistent=False)
        if descriptor.layout == "mul_ir":  # node features in and messages out, permuted
            for name, irreps in (("in", descriptor.irreps_in1), ("out", descriptor.irreps_out)):
                perm, inverse = channel_last_permutation(irreps)
                self.register_buffer(f"{name}_perm", perm, persistent=False)
                self.register_buffer(f"{name}_inverse", inverse, persistent=False)

    def channel_last(self, node_feats: torch.Tensor) -> torch.Tensor:
        """(n, irreps_in1.dim) in ``descriptor.layout`` -> (n, d_in, U) channel-last."""
        if self.descriptor.layout == "mul_ir":
            node_feats = permute_columns(node_feats, self.in_perm, self.in_inverse)
        return node_feats.reshape(node_feats.shape[0], -1, self.channels)

    def output_layout(self, out: torch.Tensor) -> torch.Tensor:
        """(n, d_out, U) channel-last -> (n, irreps_out.dim) in ``descriptor.layout``."""
        flat = out.reshape(out.shape[0], -1)
        if self.descriptor.layout == "ir_mul":
            return flat
        return permute_columns(flat, self.out_inverse, self.out_perm)

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        weight_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Messages summed onto receivers (shapes as ``reference.ChannelwiseTensorProduct``).

        Args:
            node_feats: (n_nodes, irreps_in1.dim) in ``descriptor.layout``.
            edge_attrs: (n_edges, irreps_in2.dim).
            edge_weights: (n_rows, weight_numel).
            sender: (n_edges,) int64.
            receiver: (n_edges,) int64.
            weight_row: (n_edges,) int64 row of ``edge_weights`` of each edge, or None (one
                row per edge). The CPU kernels read the shared rows in place.

        Returns:
            (n_nodes, irreps_out.dim) in ``descriptor.layout``.
        """
        io_dtype = node_feats.dtype
        dtype = self.math_dtype or io_dtype
        n_nodes, n_edges = node_feats.shape[0], edge_attrs.shape[0]
        x = self.channel_last(node_feats.to(dtype))
        s = edge_attrs.to(dtype) @ self.coupling.to(dtype)
        w = edge_weights.to(dtype).reshape(-1, self.n_paths, self.channels)
        if kernel_ops_apply(x.device, x.dtype):
            graph = edge_ops.edge_graph(
                sender,
                receiver,
                n_nodes,
                n_nodes,
                self.triples,
                self.swapped,
                weight_row,
                w.shape[0],
            )
            out = edge_ops.node_out(x, s, w, graph, n_nodes, self.d_out)
        else:
            if weight_row is not None:
                w = w.index_select(0, weight_row)
            p, i, k, t = self.triples.unbind(1)
            products = x[sender][:, i, :] * w[:, p, :] * s[:, t, None]  # (n_edges, T, U)
            messages = products.new_zeros(n_edges, self.d_out, self.channels).index_add(
                1, k, products
            )
            out = messages.new_zeros(n_nodes, *messages.shape[1:]).index_add(0, receiver, messages)
        return self.output_layout(out).to(io_dtype)
