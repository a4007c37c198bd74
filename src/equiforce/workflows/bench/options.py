"""The bench's model options: precision, kernel backend and torch.compile, checked early.

Each option is handed to the library that owns it: precision policies to
``equiforce.precision`` (when that package is present; plain ``float32``/``float64`` always
work), backends to ``equiforce.kernels.use_backend``, compilation to
``equiforce.models.compile.compile_potential``. Names are checked in the driver before any
worker starts, so a typo fails in a second with the known names.
"""

from __future__ import annotations

from equiforce.models import Potential

__all__ = [
    "PLAIN_PRECISIONS",
    "apply_backend",
    "apply_compile",
    "apply_precision",
    "check_backend",
    "check_compile",
    "executor_backends",
    "model_dtype",
]

PLAIN_PRECISIONS = ("float32", "float64")


def model_dtype(precision: str) -> str:
    """Parameter dtype of a precision name ("float32"/"float64" or a policy mode).

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    if precision in PLAIN_PRECISIONS:
        return precision
    try:
        from equiforce.precision import from_name
    except ImportError:
        raise ValueError(
            f"unknown precision {precision!r}; known: {list(PLAIN_PRECISIONS)}"
        ) from None
    return from_name(precision).model_dtype


def apply_precision(potential: Potential, precision: str) -> Potential:
    """Install a precision policy on ``potential`` (plain dtypes need nothing more)."""
    if precision in PLAIN_PRECISIONS:
        return potential
    from equiforce.precision import apply_policy, from_name

    return apply_policy(potential, from_name(precision))


def check_backend(backend: str | None) -> None:
    """Raise ``ValueError`` unless ``backend`` is None or a known kernel backend."""
    if backend is None:
        return
    try:
        from equiforce.kernels import use_backend  # noqa: F401
        from equiforce.kernels.registry import resolve_backend
    except ImportError as err:
        raise ValueError(
            f"--backend {backend}: no kernel backends in this equiforce ({err})"
        ) from None
    resolve_backend(backend)


def apply_backend(potential: Potential, backend: str | None) -> Potential:
    """Move ``potential``'s executors to ``backend`` (None: keep them)."""
    if backend is None:
        return potential
    check_backend(backend)
    from equiforce.kernels import use_backend

    return use_backend(potential, backend)


def check_compile(enabled: bool) -> None:
    """Raise ``ValueError`` if compilation is asked for but unavailable."""
    if not enabled:
        return
    try:
        from equiforce.models.compile import compile_potential  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--compile: this equiforce cannot compile models ({err})") from None


def apply_compile(potential: Potential, enabled: bool) -> Potential:
    """``compile_potential(potential)`` when ``enabled``, else ``potential``."""
    if not enabled:
        return potential
    check_compile(enabled)
    from equiforce.models.compile import compile_potential

    return compile_potential(potential)


def executor_backends(potential: Potential) -> list[str]:
    """Kernel backends of ``potential``'s executors (empty without a kernel registry)."""
    try:
        from equiforce.kernels.registry import executor_key
    except ImportError:
        return []
    keys = (executor_key(module) for module in potential.modules())
    return sorted({key[1] for key in keys if key is not None})
