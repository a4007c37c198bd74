"""Export executors: the ``fast`` backend's MACE math as a package runs it, constants folded.

``equiforce.export`` traces a whole energy → forces call into one graph that AOTInductor
compiles into a package. ``exportable(model)`` swaps the ``fast`` MACE executors, in place,
for these subclasses, which on CPU in float32/float64 (``extension.kernel_ops_apply``) call the
operators of the kernel library (the package carries the library) and elsewhere (CUDA,
other dtypes, no compiler) run plain torch ops:

* ``ExportChannelwiseTensorProduct``: with the kernels, exactly its base class (the
  ``cwtp_*`` operators); otherwise the same sparse Clebsch–Gordan triples as ``fast_tp``
  (path p, input component i, output component k, coupling column t), as one row gather,
  one elementwise product and one row scatter-add on flat (node, component) rows of the
  channel-last features::

      out[r * d_out + k_t, u] += x[s(e) * d_in + i_t, u] * w[e, p_t, u] * S[e, t]

  for every edge e (s(e) -> r) and triple t, ``S = edge_attrs @ coupling``. Every step is
  an aten op (index_select / index_add on dim 0, whose derivatives are each other), so
  Inductor fuses the products into the gather and scatter and the forces' backward stays
  the same three kinds of loops; no (n_edges x d x d) dense Clebsch–Gordan mixers as in the
  reference executor.
* ``ExportSymmetricContraction``: the weights folded into the basis once, in float64, at
  ``exportable`` time (``fold``; the eager executor folds on every call): with the kernels,
  into their (n_types, K, C) coefficients, one row per non-zero (output, monomial) term (the
  ``sc_*`` operators, each atom with its own species'); otherwise ``fast_symmetric``'s
  polynomial as one batched GEMM over the used monomials, every species' polynomial on every
  atom, each atom keeping its own (shapes depend on the atom count only).

Both keep the parameters and state-dict layout of their ``fast`` base class; a model must not
be trained after ``exportable`` (the folded coefficients are a snapshot of the weights, and
are re-folded by calling ``exportable`` again). Support: any device and floating dtype
(``math_dtype`` as the base class); any grad order; deterministic on CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce.kernels.extension import kernel_ops_apply
from equiforce.kernels.fast_symmetric import FastSymmetricContraction, _used
from equiforce.kernels.fast_tp import FastChannelwiseTensorProduct
from equiforce.kernels.registry import CONSTRUCTOR_ARGS, executor_key
from equiforce.o3.symmetric import symmetric_monomials

__all__ = ["ExportChannelwiseTensorProduct", "ExportSymmetricContraction", "exportable"]


class ExportChannelwiseTensorProduct(FastChannelwiseTensorProduct):
    """Channel-wise edge TP on sparse triples in plain torch ops (module docstring)."""

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        weight_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Messages summed onto receivers: (n_nodes, irreps_out.dim); arguments, shapes and
        dtypes as ``reference.ChannelwiseTensorProduct.forward``."""
        io_dtype = node_feats.dtype
        dtype = self.math_dtype or io_dtype
        if kernel_ops_apply(node_feats.device, dtype):  # the C++ operators, carried by the package
            return super().forward(
                node_feats, edge_attrs, edge_weights, sender, receiver, weight_row
            )
        if weight_row is not None:
            edge_weights = edge_weights.index_select(0, weight_row)
        n_nodes, n_edges = node_feats.shape[0], edge_attrs.shape[0]
        x = self.channel_last(node_feats.to(dtype))  # (n, d_in, U)
        d_in, channels = x.shape[1], x.shape[2]
        path, i_in, k_out, column = self.triples.unbind(1)
        s = (edge_attrs.to(dtype) @ self.coupling.to(dtype)).index_select(1, column)
        w = edge_weights.to(dtype).reshape(n_edges, self.n_paths, channels)
        coefficients = w.index_select(1, path) * s[:, :, None]  # (n_edges, T, U)
        rows_in = (sender[:, None] * d_in + i_in[None, :]).reshape(-1)
        gathered = x.reshape(n_nodes * d_in, channels).index_select(0, rows_in)
        products = gathered.reshape(coefficients.shape) * coefficients
        rows_out = (receiver[:, None] * self.d_out + k_out[None, :]).reshape(-1)
        out = products.new_zeros(n_nodes * self.d_out, channels).index_add(
            0, rows_out, products.reshape(-1, channels)
        )
        out = out.reshape(n_nodes, self.d_out, channels)
        return self.output_layout(out).to(io_dtype)


class ExportSymmetricContraction(FastSymmetricContraction):
    """MACE's symmetric contraction as one product per channel, weights folded once.

    Per channel c the polynomial is ``out[n, c, o] = sum_m F[c, m, t_n, o] mono_m(x[n, c])``
    over the monomials m of degree 1..correlation that some basis element uses (for
    0e+1o+2e+3o -> 0e+1o: 16 linear, the base class's 123 quadratic ``pairs``, 355 of the
    816 cubic), with ``F[c, m, s, o] = sum_k U[m, o, k] W[s, k, c]`` folded in float64 by
    ``fold``. The monomials are built once per call (the pairs as in the base class, each
    cubic as its pair times its last factor) and the whole polynomial is one batched GEMM
    ``(C, n, M) @ (C, M, S * o)``, every species' polynomial on every atom (S = n_types),
    each atom keeping its own. Against the base class's Horner form with folded weights
    (dense over (last factor, pair): 1968 combinations of which 355 are used) this is 5.5x
    fewer multiply-adds and coefficients for the cubic part, and with atoms as the rows the
    batched GEMMs ran 2.5x faster than with atoms as the columns (one CPU core, float32).

    Buffers (not saved): ``cubic_pair`` and ``cubic_last`` (M3,) int64, the pair and the
    last factor of each cubic monomial used; after ``fold``, ``folded`` (C, M, S * o) in the
    math dtype. Before ``fold`` it computes as its base class.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        desc = self.descriptor
        dim, n_pairs = desc.coupling_irreps.dim, self.pairs.shape[1]
        bases = [
            [desc.basis(o, nu) for nu in range(1, desc.correlation + 1)]
            for o in range(len(desc.irreps_out))
        ]
        pair_of = {pair: i for i, pair in enumerate(map(tuple, self.pairs.T.tolist()))}
        rows = [list(range(dim)), list(range(n_pairs)), []]  # used monomials per degree
        if desc.correlation >= 2:
            monomials = symmetric_monomials(dim, 2)[0].tolist()
            rows[1] = [monomials.index(list(pair)) for pair in pair_of]
        cubic: list[tuple[int, int]] = []
        if desc.correlation >= 3:
            monomials = symmetric_monomials(dim, 3)[0]
            used = torch.stack([_used(per_degree[2]) for per_degree in bases]).any(dim=0)
            rows[2] = used.nonzero().flatten().tolist()
            cubic = [
                (pair_of[tuple(monomials[r, :2].tolist())], int(monomials[r, 2])) for r in rows[2]
            ]
        pairs_and_last = torch.tensor(cubic, dtype=torch.long).reshape(-1, 2)
        self.register_buffer("cubic_pair", pairs_and_last[:, 0].contiguous(), persistent=False)
        self.register_buffer("cubic_last", pairs_and_last[:, 1].contiguous(), persistent=False)
        for o, per_degree in enumerate(bases):
            # (M, ir.dim, n_weights_o): block-diagonal in (degree, weight), as ``weights.{o}``
            sizes = [b.shape[2] for b in per_degree]
            count = sum(len(r) for r in rows[: desc.correlation])
            basis = torch.zeros(count, per_degree[0].shape[1], sum(sizes), dtype=torch.float64)
            start = 0
            for nu, b in enumerate(per_degree):
                columns = slice(sum(sizes[:nu]), sum(sizes[: nu + 1]))
                basis[start : start + len(rows[nu]), :, columns] = b[rows[nu]]
                start += len(rows[nu])
            self.register_constant(f"monomial_basis_{o}", basis)

    def fold(self) -> None:
        """Fold the current weights into the basis (float64, then the math dtype): into the
        C++ kernels' layout (``kernel_folded``) where they apply, else ``folded``."""
        dtype = self.math_dtype or self.weights[0].dtype
        device = self.weights[0].device
        if kernel_ops_apply(device, dtype):
            weights = [w.detach().to("cpu", torch.float64) for w in self.weights]
            bases = [self._constant_masters[f"term_basis_{o}"] for o in range(len(weights))]
            with torch.no_grad():
                folded = self.kernel_coefficients(weights, bases)
            self.register_buffer("kernel_folded", folded.to(device, dtype), persistent=False)
            return
        folded = torch.cat(
            [
                torch.einsum(
                    "mik,skc->cmsi",
                    self._constant_masters[f"monomial_basis_{o}"],
                    w.detach().to("cpu", torch.float64),
                )
                for o, w in enumerate(self.weights)
            ],
            dim=3,
        )  # (C, M, S, o)
        folded = folded.reshape(folded.shape[0], folded.shape[1], -1)
        self.register_buffer("folded", folded.to(device, dtype), persistent=False)

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor) -> torch.Tensor:
        """The polynomial of x (n, C, d) for atoms of species atom_type (n,) int64:
        (n, irreps_out.dim) in ``descriptor.layout``, as
        ``reference.SymmetricContraction.forward``."""
        io_dtype = x.dtype
        if hasattr(self, "kernel_folded"):
            out = self._kernels(x.to(self.kernel_folded.dtype), atom_type, self.kernel_folded)
            return self.output_layout(out).to(io_dtype)
        if not hasattr(self, "folded"):
            return super().forward(x, atom_type)
        n = x.shape[0]
        # (C, monomial, atom): every gather below and its backward (an index_add) moves
        # rows of atoms, contiguous, rather than single elements
        variables = x.to(self.folded.dtype).permute(1, 2, 0)  # (C, d, n)
        monomials = [variables]
        if self.descriptor.correlation >= 2:
            first, second = self.pairs
            quadratic = variables.index_select(1, first) * variables.index_select(1, second)
            monomials.append(quadratic)  # (C, n_pairs, n)
            if self.descriptor.correlation >= 3:
                monomials.append(
                    quadratic.index_select(1, self.cubic_pair)
                    * variables.index_select(1, self.cubic_last)
                )
        # (C, S * o, M) @ (C, M, n): the gradient of the monomials comes out (C, M, n) too,
        # so the backward of the gathers above (scatter-adds) moves contiguous rows of atoms;
        # with (C, n, M) @ (C, M, S * o) it came out (C, n, M) and Inductor scattered element
        # by element, a third of the package's time (and a broadcast product summed over M,
        # which Inductor fused with the monomials, recomputed them for every output column)
        stacked = torch.cat(monomials, dim=1)  # (C, M, n)
        every = torch.matmul(self.folded.transpose(1, 2), stacked)  # (C, S * o, n)
        every = every.reshape(every.shape[0], self.n_types, -1, n)  # (C, S, o, n)
        own = nn.functional.one_hot(atom_type, self.n_types).T.to(every.dtype)  # (S, n)
        out = (every * own[None, :, None, :]).sum(dim=1).permute(2, 0, 1)  # (n, C, o)
        return self.output_layout(out).to(io_dtype)


_EXPORT_CLASSES = {
    FastChannelwiseTensorProduct: ExportChannelwiseTensorProduct,
    FastSymmetricContraction: ExportSymmetricContraction,
}


def exportable(model: nn.Module) -> nn.Module:
    """Swap the ``fast`` edge convolution and symmetric contraction for the export executors.

    In place; like ``use_backend``, each executor is rebuilt from its constructor arguments
    (``registry.CONSTRUCTOR_ARGS``) and its state dict, device, dtype, math dtype,
    ``requires_grad`` and training mode are kept; then every ``ExportSymmetricContraction``
    is (re-)folded with the current weights. Other modules (``reference`` executors
    included) are left as they are.

    Args:
        model: a model (or any module) on its final device and dtype.

    Returns:
        ``model`` itself.
    """
    generator = torch.Generator().manual_seed(0)  # initial values are overwritten below
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            cls = _EXPORT_CLASSES.get(type(child))
            if cls is None:
                continue
            kind = executor_key(child)[0]
            arguments = [
                generator if arg == "generator" else getattr(child, arg)
                for arg in CONSTRUCTOR_ARGS[kind]
            ]
            new = cls(*arguments, math_dtype=child.math_dtype)
            tensors = [*child.parameters(), *child.buffers()]
            anchor = next(t for t in tensors if t.is_floating_point())
            new = new.to(device=anchor.device, dtype=anchor.dtype)
            new.load_state_dict(child.state_dict())
            for new_param, old_param in zip(new.parameters(), child.parameters(), strict=True):
                new_param.requires_grad_(old_param.requires_grad)
            new.train(child.training)
            setattr(parent, name, new)
    for module in model.modules():
        if isinstance(module, ExportSymmetricContraction):
            module.fold()
    return model
