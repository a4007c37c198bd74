"""The bench's model options: precision, kernel backend, torch.compile, variants, checked early.

Each option is handed to the library that owns it: precision policies to
``equiforce.precision`` (when that package is present; plain ``float32``/``float64`` always
work), backends to ``equiforce.kernels.use_backend``, compilation to
``equiforce.models.compile.compile_potential``, export to ``equiforce.export`` (the variant then
times the loaded ``.pt2`` package), MACE receiver chunks to ``MACE.chunk_edges``,
blocks of centre atoms to ``Potential.blocking``. Names are checked in the driver before any
worker starts, so a typo fails in a second with the known names.

A ``Variant`` is one equiforce worker's model settings: a bench run times the model as
built (``equiforce``) and, interleaved with it, any further variants (compiled, exported, one
pass instead of chunks, the whole graph instead of blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equiforce.models import Potential

__all__ = [
    "PLAIN_PRECISIONS",
    "Variant",
    "apply_backend",
    "apply_chunk_edges",
    "apply_compile",
    "apply_export",
    "apply_precision",
    "apply_whole_graph",
    "check_backend",
    "check_compile",
    "executor_backends",
    "is_package",
    "model_dtype",
    "package_precision",
    "refuse_package_options",
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
    """Run ``potential`` in the precision mode ``precision`` (replacing any saved policy)."""
    from equiforce.precision import apply_policy, from_name

    return apply_policy(potential, from_name(precision))


def is_package(model: str | None) -> bool:
    """Whether ``model`` names an exported package (``.pt2``, ``equiforce export``).

    The bench then times the package as exported (``load_exported``): its precision, kernel
    backend and compilation were fixed at export.
    """
    return model is not None and Path(model).suffix == ".pt2"


def package_precision(metadata: dict[str, Any]) -> str:
    """The precision mode a package was exported in (its policy's name, else its dtype)."""
    from equiforce.precision import MODES

    name = (metadata.get("precision") or {}).get("name")
    return name if name in MODES else metadata["dtype"]


def refuse_package_options(package: str, given: dict[str, bool]) -> None:
    """Raise ``ValueError`` naming the options (name -> given?) that a package cannot take.

    A package runs as exported: precision, kernel backend and compilation were fixed by
    ``equiforce export``, and it has no model code for peers, variants or training steps.
    """
    refused = [name for name, on in given.items() if on]
    if refused:
        raise ValueError(
            f"{package} is an exported package, timed as exported: {', '.join(refused)} "
            "do not apply to it (re-export the model file with equiforce export --precision/"
            "--backend, or bench the model file itself)"
        )


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


def apply_compile(potential: Potential, enabled: bool, backend: str = "inductor") -> Potential:
    """``compile_potential(potential, backend)`` when ``enabled``, else ``potential``."""
    if not enabled:
        return potential
    check_compile(enabled)
    from equiforce.models.compile import compile_potential

    return compile_potential(potential, backend=backend)


def apply_export(potential: Potential, backend: str | None, folder: str) -> Any:
    """The loaded ``.pt2`` package of ``potential`` (exported into ``folder`` with the kernel
    backend ``backend``, ``equiforce.export``), or ``potential`` itself when ``backend`` is None.
    """
    if backend is None:
        return potential
    from equiforce.export import export_potential, load_exported

    path = Path(folder) / "model.pt2"
    export_potential(potential, path, backend=backend, device=potential.device)
    return load_exported(path, potential.device)


@dataclass(frozen=True)
class Variant:
    """One equiforce worker's model settings, on top of the run's precision and backend.

    Attributes:
        name: label of its implementation in the report (unique within a run).
        compile: run it through ``compile_potential``.
        compile_backend: its ``torch.compile`` backend ("inductor"; "aot_eager" traces
            without generating code, for quick checks).
        chunk_edges: MACE only: edges per receiver chunk (``MACE.chunk_edges``); 0 runs every
            graph in one pass; None keeps the model's setting.
        whole_graph: strictly local models: one pass over the whole graph instead of blocks
            of centre atoms (``Potential.blocking = None``).
        export_backend: time the model's exported ``.pt2`` package (``equiforce.export``),
            traced with this kernel backend (``fast`` or ``reference``); None:
            not exported. Inference only; the worker's start includes the AOTInductor compile
            (about a minute for tiny models, several for large ones on one CPU thread).
    """

    name: str
    compile: bool = False
    compile_backend: str = "inductor"
    chunk_edges: int | None = None
    whole_graph: bool = False
    export_backend: str | None = None

    def __post_init__(self) -> None:
        if self.chunk_edges is not None and self.chunk_edges < 0:
            raise ValueError(f"variant {self.name}: chunk_edges must be >= 0 or None")

    def worker_options(self) -> list[str]:
        """This variant's options of ``python -m equiforce.workflows.bench.worker``."""
        options = ["--compile", "--compile-backend", self.compile_backend] if self.compile else []
        if self.chunk_edges is not None:
            options += ["--chunk-edges", str(self.chunk_edges)]
        if self.export_backend is not None:
            options += ["--export-backend", self.export_backend]
        return options + (["--whole-graph"] if self.whole_graph else [])


def apply_chunk_edges(potential: Potential, chunk_edges: int | None) -> Potential:
    """Set a MACE model's receiver chunks (0: one pass; None: keep them).

    Raises:
        ValueError: ``chunk_edges`` given for a model without receiver chunks.
    """
    if chunk_edges is None:
        return potential
    if not hasattr(potential.energy_model, "chunk_edges"):
        raise ValueError(f"--chunk-edges: {potential.family} models have no receiver chunks")
    potential.energy_model.chunk_edges = chunk_edges or None
    return potential


def apply_whole_graph(potential: Potential, whole_graph: bool) -> Potential:
    """Run ``potential`` in one pass over the whole graph when ``whole_graph`` (no blocks)."""
    if whole_graph:
        potential.blocking = None
    return potential


def executor_backends(potential: Potential) -> list[str]:
    """Kernel backends of ``potential``'s executors (empty without a kernel registry)."""
    try:
        from equiforce.kernels.registry import executor_key
    except ImportError:
        return []
    keys = (executor_key(module) for module in potential.modules())
    return sorted({key[1] for key in keys if key is not None})
