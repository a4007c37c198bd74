"""Registry of executors, keyed by (executor kind, backend name).

An *executor kind* is one of ``KINDS``: what a descriptor computes. A *backend* is a way of
computing it (``reference``, ``fast``, ``cueq``, ...). Every executor of one kind takes the
same constructor arguments (below) plus ``math_dtype`` and keeps the same parameter names,
shapes and layout, so a state dict moves between backends unchanged.

Constructor arguments per kind (the ``make_*`` functions of ``equiforce.kernels``):

* ``linear``: ``(descriptor: LinearDescriptor, generator)``
* ``channelwise_tp``: ``(descriptor: ChannelwiseTPDescriptor,)``
* ``symmetric_contraction``: ``(descriptor: SymmetricContractionDescriptor, n_types, generator)``
* ``allegro_tp``: ``(descriptor: AllegroTPDescriptor, generator)``

plus the keyword ``math_dtype: torch.dtype | None`` (None: the executor's parameter dtype, or
the input dtype for executors without parameters): the dtype the contraction runs in; outputs
come back in the input dtype. Executors store ``descriptor`` and ``math_dtype`` (and
``n_types`` for the symmetric contraction) as attributes, which is what ``use_backend`` reads
to rebuild them.

A backend need not implement every kind: a kind it lacks falls back along ``FALLBACK``
(``cueq`` -> ``fast`` -> ``reference``), so ``use_backend(model, "cueq")`` moves what cueq
accelerates and leaves the rest on the fast backend.
"""

from __future__ import annotations

import importlib.util
from types import MappingProxyType
from typing import Callable

import torch
from torch import nn

__all__ = [
    "BACKENDS",
    "FALLBACK",
    "KINDS",
    "cueq_available",
    "cueq_installed",
    "executor_class",
    "executor_key",
    "register_executor",
    "resolve_backend",
]

KINDS = ("linear", "channelwise_tp", "symmetric_contraction", "allegro_tp")
BACKENDS = ("reference", "fast", "cueq")
FALLBACK = MappingProxyType({"cueq": "fast", "fast": "reference"})

# filled once at import of ``equiforce.kernels`` (and by optional backends that register
# themselves there); never changed afterwards
_EXECUTORS: dict[tuple[str, str], Callable[..., nn.Module]] = {}
_KEY_OF: dict[type, tuple[str, str]] = {}


def register_executor(kind: str, backend: str, cls: type[nn.Module]) -> None:
    """Register ``cls`` as the executor of ``kind`` under ``backend``.

    Raises:
        ValueError: unknown kind or backend, or the pair is already registered.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown executor kind {kind!r}; known: {list(KINDS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; known: {list(BACKENDS)}")
    if (kind, backend) in _EXECUTORS:
        raise ValueError(f"executor ({kind!r}, {backend!r}) is already registered")
    _EXECUTORS[(kind, backend)] = cls
    _KEY_OF[cls] = (kind, backend)


def cueq_installed() -> bool:
    """Whether cuequivariance-torch is importable (its plain-torch methods run anywhere)."""
    return importlib.util.find_spec("cuequivariance_torch") is not None


def cueq_available() -> bool:
    """Whether ``cueq`` runs fused: CUDA, cuequivariance-torch and its CUDA ops installed."""
    return (
        torch.cuda.is_available()
        and cueq_installed()
        and importlib.util.find_spec("cuequivariance_ops_torch") is not None
    )


def resolve_backend(backend: str) -> str:
    """Concrete backend name: ``"auto"`` is ``cueq`` when ``cueq_available()``, else ``fast``.

    Raises:
        ValueError: ``backend`` is neither ``"auto"`` nor one of ``BACKENDS``.
    """
    if backend == "auto":
        return "cueq" if cueq_available() else "fast"
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; known: ['auto', *{list(BACKENDS)}]")
    return backend


def executor_class(kind: str, backend: str) -> Callable[..., nn.Module]:
    """The executor of ``kind`` for ``backend`` (``"auto"`` resolved), following ``FALLBACK``."""
    name = resolve_backend(backend)
    while (kind, name) not in _EXECUTORS:
        if name not in FALLBACK:
            raise ValueError(f"no executor of kind {kind!r} is registered")
        name = FALLBACK[name]
    return _EXECUTORS[(kind, name)]


def executor_key(module: nn.Module) -> tuple[str, str] | None:
    """``(kind, backend)`` of a registered executor module, or None for any other module."""
    return _KEY_OF.get(type(module))
