"""Loading a library of dispatcher operators (``TORCH_LIBRARY``) once per process.

equiforce's kernel library is one (``kernels/csrc/kernel_ops.cpp``: MACE's edge convolution
and symmetric contraction, Allegro's tensor product): eager equiforce builds and loads it
(``equiforce.kernels.extension.kernel_ops``), and an exported package that calls its operators
carries a copy that ``equiforce.export.package.load_exported`` loads. Both
go through ``load_op_library``, which loads a namespace at most once: a second copy of the
same library would register its operators twice, which the dispatcher refuses. The namespace
is a hash of what built the library, so one namespace is one build.

Needs torch only (``load_exported`` runs without the model code).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["load_op_library", "loaded_op_library"]

_LOADED: dict[str, Path] = {}  # namespace -> the file its operators came from


def loaded_op_library(namespace: str) -> Path | None:
    """The file ``namespace``'s operators were loaded from in this process, or None."""
    return _LOADED.get(namespace)


def load_op_library(namespace: str, path: str | os.PathLike) -> Path:
    """Load the operator library at ``path`` unless ``namespace`` is already loaded.

    Args:
        namespace: the operator namespace the library registers (``torch.ops.<namespace>``).
        path: the shared library.

    Returns:
        The file the namespace's operators come from (``path``, or the earlier one).

    Raises:
        OSError: the library cannot be loaded.
        RuntimeError: it loaded but registers no operator in ``namespace``.
    """
    if namespace in _LOADED:
        return _LOADED[namespace]
    torch.ops.load_library(str(path))
    if not any(
        name.startswith(f"{namespace}::")
        for name in torch._C._dispatch_get_all_op_names()
    ):
        raise RuntimeError(f"{path} registers no operator in namespace {namespace!r}")
    _LOADED[namespace] = Path(path)
    return _LOADED[namespace]
