"""Registry of executors, keyed by (executor kind, backend name).

An *executor kind* is one of ``KINDS``: what a descriptor computes. A *backend* is a way of
computing it (``reference``, ``fast``, ``cueq``, ...). Every executor of one kind takes the
same constructor arguments and keeps the same parameter names, shapes and layout, so a state
dict moves between backends unchanged.

Constructor arguments per kind are written once, in ``CONSTRUCTOR_ARGS`` (positional, in
that order), followed by the keyword ``math_dtype: torch.dtype | None`` (None: the executor's
parameter dtype, or the input dtype for executors without parameters): the dtype the
contraction runs in; outputs come back in the input dtype. The arguments are:

* ``descriptor``: the kind's descriptor (``LinearDescriptor``, ``ChannelwiseTPDescriptor``,
  ``SymmetricContractionDescriptor``, ``AllegroTPDescriptor``);
* ``n_types``: number of species (symmetric contraction);
* ``generator``: ``torch.Generator`` for the initial weights (executors with weights).

Executors keep every argument but ``generator`` as an attribute of the same name, and
``math_dtype``: ``make_executor`` builds from the names, ``equiforce.kernels.use_backend``
rebuilds from the attributes, and the ``make_*`` functions of ``equiforce.kernels`` are
typed shorthands of ``make_executor`` (``tests/kernels/test_registry.py`` checks that every
executor class and shorthand follows the table).

A backend need not implement every kind: a kind it lacks falls back along ``FALLBACK``
(``cueq`` -> ``fast`` -> ``reference``), so ``use_backend(model, "cueq")`` moves what cueq
accelerates and leaves the rest on the fast backend.
"""

from __future__ import annotations

import importlib.util
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import nn

__all__ = [
    "BACKENDS",
    "CONSTRUCTOR_ARGS",
    "FALLBACK",
    "KINDS",
    "cueq_available",
    "cueq_installed",
    "executor_class",
    "executor_key",
    "make_executor",
    "register_executor",
    "resolve_backend",
]

CONSTRUCTOR_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "linear": ("descriptor", "generator"),
        "channelwise_tp": ("descriptor",),
        "symmetric_contraction": ("descriptor", "n_types", "generator"),
        "allegro_tp": ("descriptor", "generator"),
    }
)
KINDS = tuple(CONSTRUCTOR_ARGS)
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


def make_executor(
    kind: str, backend: str = "auto", math_dtype: torch.dtype | None = None, **arguments: Any
) -> nn.Module:
    """The executor of ``kind`` for ``backend``, from its ``CONSTRUCTOR_ARGS`` by name.

    Raises:
        ValueError: unknown kind or backend.
        TypeError: ``arguments`` are not exactly the kind's constructor arguments.
    """
    if kind not in CONSTRUCTOR_ARGS:
        raise ValueError(f"unknown executor kind {kind!r}; known: {list(KINDS)}")
    names = CONSTRUCTOR_ARGS[kind]
    if set(arguments) != set(names):
        raise TypeError(f"{kind} executors take {list(names)}, got {sorted(arguments)}")
    cls = executor_class(kind, backend)
    return cls(*(arguments[name] for name in names), math_dtype=math_dtype)
