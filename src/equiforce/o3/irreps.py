"""Irreps helpers on top of ``e3nn.o3.Irreps`` (only APIs identical in e3nn 0.4.4 and 0.6).

Feature layout everywhere is e3nn's: a flat ``(..., irreps.dim)`` vector made of blocks
``mul x ir`` stored multiplicity-major, ``block.reshape(..., mul, ir.dim)``.
"""

from __future__ import annotations

from equiforce.o3.e3nn_compat import e3nn_o3

Irrep = e3nn_o3.Irrep
Irreps = e3nn_o3.Irreps

__all__ = [
    "Irrep",
    "Irreps",
    "block_slices",
    "hidden_irreps",
    "scalar_irreps",
    "sh_irreps",
    "tp_target_irreps",
]


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
