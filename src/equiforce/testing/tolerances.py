"""Named tolerances for tests; no inline magic ``atol=`` in the suite."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance pair."""

    atol: float
    rtol: float


@dataclass(frozen=True)
class Tolerances:
    """Tolerance levels by dtype and quantity."""

    fp64: Tolerance = Tolerance(atol=1e-10, rtol=1e-10)
    fp32: Tolerance = Tolerance(atol=1e-4, rtol=1e-4)
    fp64_grad: Tolerance = Tolerance(atol=1e-9, rtol=1e-9)
    finite_difference: Tolerance = Tolerance(atol=1e-6, rtol=1e-5)
    peer_parity: Tolerance = Tolerance(atol=1e-8, rtol=1e-8)


TOL = Tolerances()
