"""Allegro's tensor product as data: irreps per layer, paths and coupling coefficients.

In every Allegro layer each ordered pair (i, j) carries ``mul`` channels of tensor features
``x1[u]`` (one copy of each irrep of ``irreps_in1``) and is multiplied, channel by channel,
with the environment embedding ``x2[u]`` of its centre atom (one copy of each irrep of
``irreps_in2``):

    out[u, k] = sum_p w[u, p] * sum_ij C_p[i, j, k] x1[u, i] x2[u, j]

over all paths ``p = (ir1, ir2) -> ir_out`` allowed by the selection rules, with
``C_p = sqrt(2 l_out + 1) * wigner_3j(l1, l2, l_out)`` (e3nn "component" normalisation).
The weights ``w`` are shared by all pairs: ``(mul, n_paths)`` with path-channel coupling,
``(n_paths,)`` without. Paths are ordered output-major, then by ``ir1``, then ``ir2`` (the
order of nequip-allegro's ``Contracter``).

``allegro_layer_irreps`` resolves the irreps of the tensor track of every layer the way
nequip-allegro 0.8 does: all allowed irreps that a path can reach, the last layer keeping only
``0e``, then pruning inputs that cannot reach any kept output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from equiforce.o3.irreps import Irrep, Irreps, block_slices
from equiforce.o3.wigner import wigner_3j

__all__ = ["AllegroPath", "AllegroTPDescriptor", "allegro_layer_irreps", "tensor_track_irreps"]


def tensor_track_irreps(l_max: int, parity: bool) -> tuple[Irreps, Irreps]:
    """Edge spherical-harmonic irreps and the irreps allowed on the tensor track.

    Args:
        l_max: highest degree.
        parity: keep both parities of every ``l`` (O(3) "full"); otherwise only the
            parities of the spherical harmonics ``0e + 1o + 2e + ...``.

    Returns:
        ``(irreps_sh, allowed)``, every block of multiplicity 1.
    """
    irreps_sh = Irreps.spherical_harmonics(l_max, p=-1)
    if not parity:
        return irreps_sh, irreps_sh
    allowed = Irreps([(1, (ell, p)) for ell in range(l_max + 1) for p in (1, -1)])
    return irreps_sh, allowed


def _reachable(irreps1: Irreps, irreps2: Irreps, ir_out: Irrep) -> bool:
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps1 for _, ir2 in irreps2)


def allegro_layer_irreps(l_max: int, parity: bool, num_layers: int) -> list[Irreps]:
    """Irreps of the tensor features entering each layer, plus the last layer's output.

    Args:
        l_max: highest degree of the edge spherical harmonics.
        parity: see ``tensor_track_irreps``.
        num_layers: Allegro layers, >= 1.

    Returns:
        ``num_layers + 1`` irreps (multiplicity 1 per block): entry ``k`` is the input of
        layer ``k``'s tensor product, entry ``k + 1`` its output; the last is ``1x0e``.
    """
    irreps_sh, allowed = tensor_track_irreps(l_max, parity)
    chain = [irreps_sh]
    for index in range(num_layers):
        target = Irreps("0e") if index == num_layers - 1 else allowed
        chain.append(Irreps([(1, ir) for _, ir in target if _reachable(chain[-1], irreps_sh, ir)]))
    pruned = [chain[-1]]
    for irreps in reversed(chain[:-1]):
        keep = [
            (1, ir)
            for _, ir in irreps
            if any(out in ir * ir2 for _, ir2 in irreps_sh for _, out in pruned[-1])
        ]
        pruned.append(Irreps(keep))
    return list(reversed(pruned))


@dataclass(frozen=True)
class AllegroPath:
    """One path ``ir1 ⊗ ir2 -> ir_out`` of an Allegro tensor product.

    Attributes:
        i_in1, i_in2, i_out: block indices (every block has multiplicity 1).
        l1, l2, l_out: degrees.
    """

    i_in1: int
    i_in2: int
    i_out: int
    l1: int
    l2: int
    l_out: int


@dataclass(frozen=True)
class AllegroTPDescriptor:
    """Channel-wise tensor product of pair tensor features with the centre's environment.

    Attributes:
        irreps_in1: pair tensor-feature irreps (multiplicity 1 per block; ``mul`` copies).
        irreps_in2: environment-embedding irreps (multiplicity 1 per block).
        irreps_out: output irreps (multiplicity 1 per block).
        mul: channels (``num_tensor_features``).
        path_channel_coupling: one weight per (channel, path) instead of per path.
        paths: derived, in weight order.
        weight_shape: derived shape of the shared weights.
    """

    irreps_in1: Irreps
    irreps_in2: Irreps
    irreps_out: Irreps
    mul: int
    path_channel_coupling: bool = True
    paths: tuple[AllegroPath, ...] = field(init=False)
    weight_shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("irreps_in1", "irreps_in2", "irreps_out"):
            irreps = Irreps(getattr(self, name))
            if any(m != 1 for m, _ in irreps):
                raise ValueError(f"{name} must have multiplicity 1 per block, got {irreps}")
            object.__setattr__(self, name, irreps)
        if self.mul < 1:
            raise ValueError(f"mul must be >= 1, got {self.mul}")
        paths = tuple(
            AllegroPath(i1, i2, i_out, ir1.l, ir2.l, ir_out.l)
            for i_out, (_, ir_out) in enumerate(self.irreps_out)
            for i1, (_, ir1) in enumerate(self.irreps_in1)
            for i2, (_, ir2) in enumerate(self.irreps_in2)
            if ir_out in ir1 * ir2
        )
        if not paths:
            raise ValueError(f"no path {self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}")
        object.__setattr__(self, "paths", paths)
        n_paths = len(paths)
        shape = (self.mul, n_paths) if self.path_channel_coupling else (n_paths,)
        object.__setattr__(self, "weight_shape", shape)

    def coupling(self) -> torch.Tensor:
        """Normalised coupling coefficients of every path.

        Returns:
            (n_paths, irreps_in1.dim, irreps_in2.dim, irreps_out.dim) float64, path ``p``
            non-zero only on its blocks, where it is ``sqrt(2 l_out + 1) * wigner_3j``.
        """
        s1, s2, s_out = (
            block_slices(self.irreps_in1),
            block_slices(self.irreps_in2),
            block_slices(self.irreps_out),
        )
        dims = (self.irreps_in1.dim, self.irreps_in2.dim, self.irreps_out.dim)
        out = torch.zeros(len(self.paths), *dims, dtype=torch.float64)
        for index, path in enumerate(self.paths):
            block = wigner_3j(path.l1, path.l2, path.l_out) * math.sqrt(2 * path.l_out + 1)
            out[index, s1[path.i_in1], s2[path.i_in2], s_out[path.i_out]] = block
        return out
