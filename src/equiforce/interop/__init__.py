"""Converters from other frameworks' models (mace-torch and nequip-allegro are imported lazily)."""

from equiforce.interop.mace_torch import from_mace_torch
from equiforce.interop.nequip_allegro import from_nequip_allegro

__all__ = ["from_mace_torch", "from_nequip_allegro"]
