"""cuEquivariance executor of the MACE edge convolution (``ChannelwiseTPDescriptor``).

Wraps ``cuequivariance_torch.ChannelWiseTensorProduct`` (gather by sender, scatter by
receiver inside the op) behind the same contract and (empty) state dict as
``reference.ChannelwiseTensorProduct``, in either feature layout (cuEquivariance's own
``mul_ir`` / ``ir_mul``). cuEquivariance builds the same paths in the same
order and normalisation as ``ChannelwiseTPDescriptor`` but with its own Clebsch–Gordan
phases, so one factor per path (±1, measured once at construction against the reference on
a one-channel copy of the descriptor) is folded into the per-edge weights.

Support: CUDA with cuequivariance-ops-torch (``method="uniform_1d"``, the fused kernel); any
other device runs cuEquivariance's plain-torch ``"naive"`` method (used by the CPU tests).
float32 and float64; any grad order (the naive method is torch ops; the CUDA kernel has its
own derivatives); determinism as cuEquivariance's (scatter-adds on CUDA are not
deterministic). ``math_dtype`` is passed to cuEquivariance (None: the input dtype).
``cuequivariance-torch`` is imported when an executor is built: install the ``cueq`` extra.
The symmetric contraction and linears of the ``cueq`` backend fall back to ``fast``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from equiforce.kernels import reference
from equiforce.kernels.constants import ExactConstants
from equiforce.o3.descriptors import ChannelwiseTPDescriptor
from equiforce.o3.irreps import Irreps

__all__ = ["CueqChannelwiseTensorProduct"]


def _cuet():
    try:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
    except ImportError as err:
        raise ImportError(
            "the 'cueq' kernel backend needs cuequivariance-torch: pip install "
            "'equiforce[cueq]' (plus cuequivariance-ops-torch-cu12 for the CUDA kernels)"
        ) from err
    return cue, cuet


def _module(desc: ChannelwiseTPDescriptor, method: str, math_dtype, device, dtype) -> nn.Module:
    cue, cuet = _cuet()
    return cuet.ChannelWiseTensorProduct(
        cue.Irreps("O3", str(desc.irreps_in1)),
        cue.Irreps("O3", str(desc.irreps_in2)),
        [cue.O3(ir.l, ir.p) for _, ir in desc.irreps_filter],
        layout=cue.ir_mul if desc.layout == "ir_mul" else cue.mul_ir,
        shared_weights=False,
        internal_weights=False,
        method=method,
        math_dtype=math_dtype,
        device=device,
        dtype=dtype,
    )


def _path_factors(desc: ChannelwiseTPDescriptor) -> torch.Tensor:
    """Per weight: reference output / cuEquivariance output, path by path (±1)."""
    single = ChannelwiseTPDescriptor(  # one channel: the same numbers in either layout
        Irreps([(1, ir) for _, ir in desc.irreps_in1]), desc.irreps_in2, desc.irreps_filter
    )
    ours = reference.ChannelwiseTensorProduct(single)
    theirs = _module(single, "naive", torch.float64, "cpu", torch.float64)
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, single.irreps_in1.dim, generator=generator, dtype=torch.float64)
    x2 = torch.randn(1, single.irreps_in2.dim, generator=generator, dtype=torch.float64)
    index = torch.zeros(1, dtype=torch.long)
    slices = single.slices()[2]
    factors = []
    for p, path in enumerate(single.paths):
        weights = torch.zeros(1, single.weight_numel, dtype=torch.float64)
        weights[0, p] = 1.0
        a = ours(x1, x2, weights, index, index)[0, slices[path.i_out]]
        b = theirs(x1, x2, weights)[0, slices[path.i_out]]
        ratio = (a @ b) / (b @ b)
        if not torch.allclose(a, ratio * b, atol=1e-10):
            raise RuntimeError(f"cuEquivariance path {p} is not proportional to the reference")
        factors.extend([round(float(ratio), 10)] * desc.paths[p].mul)
    return torch.tensor(factors, dtype=torch.float64)


class CueqChannelwiseTensorProduct(ExactConstants):
    """Gather -> channel-wise TP -> scatter through cuEquivariance (see module docstring).

    Buffers (not saved): ``path_factors`` (weight_numel,).

    Args:
        descriptor: what to compute.
        math_dtype: dtype of the contraction (None: the inputs').
    """

    op_class: ClassVar[str] = "tensor_product"  # equiforce.precision.OP_CLASSES

    def __init__(self, descriptor: ChannelwiseTPDescriptor, math_dtype: torch.dtype | None = None):
        super().__init__()
        self.descriptor = descriptor
        self.math_dtype = math_dtype
        self.register_constant("path_factors", _path_factors(descriptor))
        self._ops: dict[tuple, nn.Module] = {}  # per (device, dtype): built on first use

    def _op(self, x: torch.Tensor) -> nn.Module:
        key = (x.device, x.dtype)
        if key not in self._ops:
            method = "uniform_1d" if x.device.type == "cuda" else "naive"
            math_dtype = self.math_dtype or x.dtype
            self._ops[key] = _module(self.descriptor, method, math_dtype, x.device, x.dtype)
        return self._ops[key]

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weights: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        weight_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Messages summed onto receivers (arguments and shapes as
        ``reference.ChannelwiseTensorProduct``)."""
        if weight_row is not None:
            edge_weights = edge_weights.index_select(0, weight_row)
        weights = edge_weights * self.path_factors.to(edge_weights.dtype)
        return self._op(node_feats)(
            node_feats,
            edge_attrs,
            weights,
            indices_1=sender,
            indices_out=receiver,
            size_out=node_feats.shape[0],
        )
