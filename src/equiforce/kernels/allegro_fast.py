"""Fast CPU/GPU executor of ``equiforce.o3.allegro_tp.AllegroTPDescriptor`` (backend ``fast``).

Same parameter (``weight``, ``descriptor.weight_shape``), initialisation and call signature as
``allegro_reference.AllegroTensorProduct``, so checkpoints load under either backend.

The reference forms ``x1 ⊗ x2`` per (pair, channel), ``mul * dim1 * dim2`` numbers per pair,
with the small irrep axis innermost, and contracts it with one batched matmul per channel; on a
CPU its broadcasts over axes of length 1-9 run far below memory bandwidth. Here the pair
features are laid out **component-major**, ``(dim, n_edges, mul)`` (every irrep component one
long contiguous row), and the work that depends only on the centre atom is done per atom, a
factor ``P (n_atoms, dim1, dim_out, mul)``:

* ``general`` mode: ``x2`` is the centre's environment, so the weight-mixed coupling
  ``M[u] = sum_p w[u, p] C_p`` is contracted with it per atom (one batched matmul,
  ``P[n, :, :, u] = env[n, u] . M[u]``). There are ~10-50x fewer atoms than pairs, so the
  coupling never runs per pair and no outer product is formed;
* ``dot`` mode (every path has ``l_out = 0``: the last Allegro layer, output ``0e``): the
  coupling is ``c_p δ_ij``, so ``P[n, i, 0, u]`` is the sum of the terms ``(c w)[row] x2[n,
  j, u]`` that multiply ``x1[i]``.

Then ``out[k, e, u] = sum_i x1[i, e, u] P[centre[e], i, k, u]``: on CPU in float32/float64
the kernel library's ``allegro_gather_contract`` (``allegro_product_ops``: no pair-sized
``(dim1, dim_out, n_edges, mul)`` product, its derivatives again the library's operators,
traced as opaque calls so exported packages run them too), elsewhere a gather, a broadcast
product and a sum in torch ops. Any grad order (double backward for force training),
float32/float64, any device, deterministic.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from equiforce.kernels.allegro_product_ops import gather_contract
from equiforce.kernels.allegro_reference import initial_weight
from equiforce.kernels.constants import ExactConstants
from equiforce.kernels.extension import kernel_ops_apply
from equiforce.o3.allegro_tp import AllegroTPDescriptor

__all__ = ["FastAllegroTensorProduct"]


class FastAllegroTensorProduct(ExactConstants):
    """Gather the centre's environment, then the channel-wise Allegro tensor product.

    Parameters: ``weight`` ``descriptor.weight_shape``, initialised as the reference (same
    generator draws). Buffers (not saved; rebuilt from the descriptor): general mode:
    ``coupling`` (n_paths, dim2 * dim1 * dim_out) float64; dot mode: ``rows1`` / ``rows2``
    (n_terms,) int64 components of ``x1`` / ``x2`` multiplied in each term, ``row_path`` its
    path and ``row_const`` its coupling constant.

    Args:
        descriptor: what to compute.
        generator: random source for the initial weights.
        math_dtype: dtype of the contraction (None: the weight's); the output comes back in
            the dtype of ``x1``.
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(
        self,
        descriptor: AllegroTPDescriptor,
        generator: torch.Generator,
        math_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        self.weight = nn.Parameter(initial_weight(descriptor, generator))
        coupling = descriptor.coupling()  # (n_paths, d1, d2, d_out)
        self.dim_out = descriptor.irreps_out.dim
        self.dot_mode = all(path.l_out == 0 for path in descriptor.paths)
        if self.dot_mode:
            self._build_dot(coupling)
        else:
            self._build_general(coupling)

    def _build_dot(self, coupling: torch.Tensor) -> None:
        """Terms ``c_p x1[i] x2[j]`` of the (single, scalar) output, one per non-zero."""
        path, i, j, k = coupling.nonzero(as_tuple=True)
        if self.dim_out != 1 or bool((k != 0).any()):
            raise AssertionError("dot mode needs a single scalar output")
        self._register_rows(i, j)
        self.register_buffer("row_path", path, persistent=False)
        self.register_constant("row_const", coupling[path, i, j, k])

    def _build_general(self, coupling: torch.Tensor) -> None:
        """Coupling as ``(n_paths, dim2 * dim1 * dim_out)``, ``x2``'s axis first."""
        n_paths, d1, d2, d_out = coupling.shape
        self.dims = (d1, d2, d_out)
        flat = coupling.permute(0, 2, 1, 3).reshape(n_paths, d2 * d1 * d_out)
        self.register_constant("coupling", flat.contiguous())

    def _register_rows(self, rows1: torch.Tensor, rows2: torch.Tensor) -> None:
        """Store the (x1, x2) component pairs multiplied, and whether they are ``(i, i)``."""
        d1, d2 = self.descriptor.irreps_in1.dim, self.descriptor.irreps_in2.dim
        pairs = list(zip(rows1.tolist(), rows2.tolist(), strict=True))
        self.diagonal = d1 == d2 and pairs == [(i, i) for i in range(d1)]
        self.register_buffer("rows1", rows1.clone(), persistent=False)
        self.register_buffer("rows2", rows2.clone(), persistent=False)

    def _term_weights(self, weight: torch.Tensor) -> torch.Tensor:
        """(n_terms, 1, mul) or (n_terms, 1, 1): the weight of each term's path."""
        weight = weight if weight.dim() == 2 else weight.unsqueeze(0)
        return weight.t().index_select(0, self.row_path).unsqueeze(1)

    def forward(self, x1: torch.Tensor, env: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Tensor product of pair features with the environment of each pair's centre.

        Args:
            x1: (n_edges, mul, irreps_in1.dim) pair tensor features (any strides; a
                component-major tensor, as this module returns, avoids a copy).
            env: (n_atoms, mul, irreps_in2.dim) environment embedding per atom.
            centre: (n_edges,) int64 centre atom of each pair.

        Returns:
            (n_edges, mul, irreps_out.dim), a view of a component-major tensor.
        """
        io_dtype = x1.dtype
        weight = self.weight.to(self.math_dtype or self.weight.dtype)
        a = x1.to(weight.dtype).permute(2, 0, 1)  # (d1, n_edges, mul)
        env = env.to(weight.dtype)
        factor = self._dot_factor(env, weight) if self.dot_mode else self._factor(env, weight)
        if kernel_ops_apply(a.device, a.dtype):  # no (d1, d_out, n_edges, mul) product
            out = gather_contract(a, factor, centre).permute(1, 2, 0)
        else:  # (n_edges, d1, d_out, mul) products summed over d1
            out = (factor.index_select(0, centre) * a.transpose(0, 1).unsqueeze(2)).sum(1)
            out = out.transpose(1, 2)
        return out.to(io_dtype)  # (n_edges, mul, d_out)

    def _factor(self, env: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """General mode: (n_atoms, d1, d_out, mul), the weight-mixed coupling contracted with
        each atom's environment ``env`` (n_atoms, mul, d2)."""
        d1, d2, d_out = self.dims
        mul = env.shape[1]
        mixed = weight @ self.coupling.to(weight.dtype)  # ([mul,] d2 * d1 * d_out)
        if self.descriptor.path_channel_coupling:  # (mul, n_atoms, d1 * d_out)
            per_atom = torch.bmm(env.transpose(0, 1), mixed.view(mul, d2, d1 * d_out))
            per_atom = per_atom.permute(1, 2, 0)
        else:  # (n_atoms, mul, d1 * d_out)
            per_atom = (env @ mixed.view(d2, d1 * d_out)).transpose(1, 2)
        return per_atom.reshape(-1, d1, d_out, mul)

    def _dot_factor(self, env: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Dot mode: (n_atoms, d1, 1, mul), per component i of ``x1`` the sum of its terms'
        environment components (``env`` (n_atoms, mul, d2)) times path weight and coupling."""
        b = env.transpose(1, 2)  # (n_atoms, d2, mul)
        b = b if self.diagonal else b.index_select(1, self.rows2)  # (n_atoms, n_terms, mul)
        weights = self._term_weights(weight) * self.row_const.to(weight.dtype).view(-1, 1, 1)
        b = b * weights.transpose(0, 1)  # weights: (n_terms, 1, mul or 1)
        if not self.diagonal:
            d1 = self.descriptor.irreps_in1.dim
            b = b.new_zeros(b.shape[0], d1, b.shape[2]).index_add(1, self.rows1, b)
        return b.unsqueeze(2)
