"""Irreps helpers on top of ``e3nn.o3.Irreps`` (only APIs identical in e3nn 0.4.4 and 0.6).

A feature vector is a flat ``(..., irreps.dim)`` row of blocks ``mul x ir``, in irreps order;
``LAYOUTS`` names the two orders of the numbers inside a block (cuEquivariance's names):

* ``"mul_ir"``, e3nn's: multiplicity-major, ``block.reshape(..., mul, ir.dim)``;
* ``"ir_mul"``, channel-last: component-major, ``block.reshape(..., ir.dim, mul)``. Where
  every block has the same ``mul`` (MACE's features), the whole row is then
  ``row.reshape(..., irreps.dim // mul, mul)``: one channel axis, which the C++ kernels and
  the GEMMs of the fast executors read without a copy.

Scalar blocks and blocks of multiplicity 1 are the same in both.
"""

from __future__ import annotations

from torch import Tensor

from equiforce.o3.e3nn_compat import e3nn_o3

Irrep = e3nn_o3.Irrep
Irreps = e3nn_o3.Irreps

__all__ = [
    "LAYOUTS",
    "Irrep",
    "Irreps",
    "block_slices",
    "check_layout",
    "flatten_block",
    "hidden_irreps",
    "scalar_irreps",
    "sh_irreps",
    "tp_target_irreps",
    "unflatten_block",
]

LAYOUTS = ("mul_ir", "ir_mul")


def sh_irreps(lmax: int) -> Irreps:
    """Irreps of spherical harmonics ``0e + 1o + 2e + ...`` up to ``lmax``."""
    return Irreps.spherical_harmonics(lmax)


def scalar_irreps(n: int) -> Irreps:
    """``n x 0e``."""
    return Irreps(f"{n}x0e")


def hidden_irreps(num_channels: int, max_L: int) -> Irreps:  # noqa: N803 (MACE's name)
    """MACE hidden irreps ``num_channels x (0e + 1o + ... )`` up to ``max_L`` (SH parities)."""
    return Irreps([(num_channels, (ell, (-1) ** ell)) for ell in range(max_L + 1)])


def tp_target_irreps(num_channels: int, irreps_sh: Irreps) -> Irreps:
    """Irreps an interaction produces: ``num_channels`` copies of each SH irrep, sorted."""
    return Irreps([(num_channels, ir) for _, ir in irreps_sh]).sort().irreps.simplify()


def block_slices(irreps: Irreps) -> list[slice]:
    """Slices of each ``mul x ir`` block in the flat feature vector."""
    out, start = [], 0
    for mul, ir in irreps:
        out.append(slice(start, start + mul * ir.dim))
        start += mul * ir.dim
    return out


def check_layout(layout: str) -> None:
    """Raises ValueError unless ``layout`` is one of ``LAYOUTS``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown feature layout {layout!r}; known: {list(LAYOUTS)}")


def unflatten_block(block: Tensor, mul: int, dim: int, layout: str) -> Tensor:
    """A block ``(..., mul * dim)`` stored in ``layout`` as ``(..., dim, mul)``, a view (no
    copy, and a single view op for ``ir_mul``)."""
    if layout == "ir_mul":
        return block.unflatten(-1, (dim, mul))
    return block.unflatten(-1, (mul, dim)).transpose(-1, -2)


def flatten_block(block: Tensor, layout: str) -> Tensor:
    """``(..., dim, mul)`` -> the block ``(..., mul * dim)`` stored in ``layout`` (a view
    when ``ir_mul`` and ``block`` is contiguous)."""
    if layout == "mul_ir":
        block = block.transpose(-1, -2)
    return block.reshape(*block.shape[:-2], block.shape[-2] * block.shape[-1])
