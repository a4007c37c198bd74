"""Converters from and to other frameworks' models (mace-torch, nequip-allegro: imported lazily)."""

from equiforce.interop.mace_torch import from_mace_torch
from equiforce.interop.mace_torch_export import to_mace_torch
from equiforce.interop.nequip_allegro import from_nequip_allegro
from equiforce.interop.nequip_allegro_export import to_nequip_allegro

__all__ = ["from_mace_torch", "from_nequip_allegro", "to_mace_torch", "to_nequip_allegro"]
