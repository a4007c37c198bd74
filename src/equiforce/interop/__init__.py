"""Converters from other frameworks' models (mace-torch is imported lazily)."""

from equiforce.interop.mace_torch import from_mace_torch

__all__ = ["from_mace_torch"]
