"""Exported potentials: AOTInductor ``.pt2`` packages that run without the model code.

Loading (``load_exported``, ``ExportedPotential``, ``read_metadata``) needs torch, numpy,
vesin and ase only and is imported here; writing (``export_potential``, in ``build``) needs
the model stack and is imported on first use, so ``from equiforce.export import
load_exported`` never loads ``equiforce.models``.
"""

from __future__ import annotations

from equiforce.export.package import (
    ExportedPackageError,
    ExportedPotential,
    load_exported,
    read_metadata,
)

__all__ = [
    "ExportError",
    "ExportValidationError",
    "ExportedPackageError",
    "ExportedPotential",
    "export_potential",
    "load_exported",
    "read_metadata",
]

_BUILD_NAMES = ("ExportError", "ExportValidationError", "export_potential")


def __getattr__(name: str):
    # the writer imports equiforce.models; only when asked for
    if name in _BUILD_NAMES:
        from equiforce.export import build

        return getattr(build, name)
    raise AttributeError(f"module 'equiforce.export' has no attribute {name!r}")
