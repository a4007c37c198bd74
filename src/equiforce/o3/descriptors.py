"""Immutable descriptions of the linear maps and tensor products MACE uses.

A descriptor says *what* is computed (irreps, paths, coefficients, normalisation and the
layout of the weights); an executor in ``equiforce.kernels`` says *how*. Every executor of a
descriptor uses the same parameter shapes and layout, so weights move between backends.

Normalisations follow e3nn (``irrep_normalization="component"``,
``path_normalization="element"``), so weights map 1:1 to e3nn modules of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from equiforce.o3.irreps import Irreps, block_slices, check_layout

__all__ = ["ChannelwiseTPDescriptor", "LinearDescriptor", "LinearPath", "TPPath"]


def _irreps_field(obj: object, name: str) -> None:
    object.__setattr__(obj, name, Irreps(getattr(obj, name)))


@dataclass(frozen=True)
class LinearPath:
    """One block of an equivariant linear map: ``mul_in x ir -> mul_out x ir``.

    Attributes:
        i_in, i_out: block indices in ``irreps_in`` / ``irreps_out``.
        mul_in, mul_out, ir_dim: block sizes.
        weight_offset: start of this path's weights in the flat weight vector.
        scale: normalisation ``1 / sqrt(fan_in)``.
    """

    i_in: int
    i_out: int
    mul_in: int
    mul_out: int
    ir_dim: int
    weight_offset: int
    scale: float


@dataclass(frozen=True)
class LinearDescriptor:
    """Equivariant linear map between irreps, optionally with one weight set per species.

    ``n_types == 0``: one shared weight (e3nn ``o3.Linear``); each path's weights are a
    ``(mul_in, mul_out)`` block, normalised by ``1/sqrt(sum of mul_in into that output)``.
    ``n_types > 0``: the species-dependent map of a tensor product with a one-hot species
    vector (e3nn ``FullyConnectedTensorProduct(irreps_in, n_types x 0e, irreps_out)``); each
    path's weights are a ``(mul_in, n_types, mul_out)`` block normalised by
    ``1/sqrt(n_types * sum of mul_in)``. Blocks are concatenated in path order.

    Attributes:
        irreps_in: input irreps.
        irreps_out: output irreps; blocks with no matching input are zero.
        n_types: number of species, or 0 for shared weights.
        layout: order inside the blocks of the input and output features (``o3.irreps.LAYOUTS``;
            the weights' layout does not depend on it).
        paths: derived list of ``LinearPath``.
        weight_numel: derived size of the flat weight vector.
    """

    irreps_in: Irreps
    irreps_out: Irreps
    n_types: int = 0
    layout: str = "mul_ir"
    paths: tuple[LinearPath, ...] = field(init=False)
    weight_numel: int = field(init=False)

    def __post_init__(self) -> None:
        _irreps_field(self, "irreps_in")
        _irreps_field(self, "irreps_out")
        check_layout(self.layout)
        if self.n_types < 0:
            raise ValueError(f"n_types must be >= 0, got {self.n_types}")
        pairs = [
            (i_in, i_out)
            for i_in, (_, ir_in) in enumerate(self.irreps_in)
            for i_out, (_, ir_out) in enumerate(self.irreps_out)
            if ir_in == ir_out
        ]
        types = max(self.n_types, 1)
        fan_in = {i_out: 0 for _, i_out in pairs}
        for i_in, i_out in pairs:
            fan_in[i_out] += self.irreps_in[i_in].mul * types
        paths, offset = [], 0
        for i_in, i_out in pairs:
            mul_in, ir = self.irreps_in[i_in]
            mul_out = self.irreps_out[i_out].mul
            scale = 1.0 / math.sqrt(fan_in[i_out]) if fan_in[i_out] > 0 else 0.0
            paths.append(LinearPath(i_in, i_out, mul_in, mul_out, ir.dim, offset, scale))
            offset += mul_in * types * mul_out
        object.__setattr__(self, "paths", tuple(paths))
        object.__setattr__(self, "weight_numel", offset)


@dataclass(frozen=True)
class TPPath:
    """One path of a channel-wise tensor product ``(mul x ir1) ⊗ ir2 -> mul x ir_out``.

    Attributes:
        i_in1, i_in2, i_out: block indices.
        l1, l2, l_out: degrees (coupling tensor ``wigner_3j(l1, l2, l_out)``).
        mul: channels of the path.
        weight_offset: start of this path's ``mul`` per-edge weights.
        scale: ``sqrt(ir_out.dim / fan_in)`` (e3nn component/element normalisation).
    """

    i_in1: int
    i_in2: int
    i_out: int
    l1: int
    l2: int
    l_out: int
    mul: int
    weight_offset: int
    scale: float


@dataclass(frozen=True)
class ChannelwiseTPDescriptor:
    """Channel-wise ('uvu') tensor product of node features with edge spherical harmonics.

    For every input block ``mul x ir1`` and SH block ``ir2`` (multiplicity 1), every
    ``ir_out in ir1 ⊗ ir2`` that appears in ``irreps_filter`` gives a path with its own
    output block; output blocks are then sorted by irrep (stable), exactly like MACE's
    ``tp_out_irreps_with_instructions``. Each path has ``mul`` per-edge weights, one per
    channel; weights are concatenated in path order (paths sorted by output block).

    Attributes:
        irreps_in1: node-feature irreps.
        irreps_in2: edge-attribute (SH) irreps, multiplicity 1 per block.
        irreps_filter: which output irreps to keep.
        layout: order inside the blocks of the node features and the output
            (``o3.irreps.LAYOUTS``; the edge attributes have multiplicity 1, the same in both).
        irreps_out: derived output irreps (sorted, not simplified).
        paths: derived paths, in weight order.
        weight_numel: derived number of per-edge weights.
    """

    irreps_in1: Irreps
    irreps_in2: Irreps
    irreps_filter: Irreps
    layout: str = "mul_ir"
    irreps_out: Irreps = field(init=False)
    paths: tuple[TPPath, ...] = field(init=False)
    weight_numel: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("irreps_in1", "irreps_in2", "irreps_filter"):
            _irreps_field(self, name)
        check_layout(self.layout)
        if any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(f"irreps_in2 must have multiplicity 1, got {self.irreps_in2}")
        keep = {ir for _, ir in self.irreps_filter}
        slots = []  # (i_in1, i_in2, mul, ir_out) in creation order
        for i1, (mul, ir1) in enumerate(self.irreps_in1):
            for i2, (_, ir2) in enumerate(self.irreps_in2):
                slots.extend((i1, i2, mul, ir) for ir in ir1 * ir2 if ir in keep)
        unsorted = Irreps([(mul, ir) for _, _, mul, ir in slots])
        irreps_out, permutation, _ = unsorted.sort()
        order = sorted(range(len(slots)), key=lambda k: permutation[k])
        paths, offset = [], 0
        for k in order:
            i1, i2, mul, ir_out = slots[k]
            scale = math.sqrt(ir_out.dim / self.irreps_in2[i2].mul)
            l1, l2 = self.irreps_in1[i1].ir.l, self.irreps_in2[i2].ir.l
            paths.append(TPPath(i1, i2, permutation[k], l1, l2, ir_out.l, mul, offset, scale))
            offset += mul
        object.__setattr__(self, "irreps_out", irreps_out)
        object.__setattr__(self, "paths", tuple(paths))
        object.__setattr__(self, "weight_numel", offset)

    def slices(self) -> tuple[list[slice], list[slice], list[slice]]:
        """Block slices of ``irreps_in1``, ``irreps_in2`` and ``irreps_out``."""
        return (
            block_slices(self.irreps_in1),
            block_slices(self.irreps_in2),
            block_slices(self.irreps_out),
        )
