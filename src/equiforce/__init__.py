"""equiforce: fast, accurate E(3)-equivariant interatomic potentials (MACE, Allegro)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["EquiforceCalculator", "__version__"]


def __getattr__(name: str):
    # The calculator pulls in ASE and the model stack; import it only when asked for.
    if name == "EquiforceCalculator":
        from equiforce.md.calculator import EquiforceCalculator

        return EquiforceCalculator
    raise AttributeError(f"module 'equiforce' has no attribute {name!r}")
