"""Build-on-first-use loaders of the C++ CPU kernels in ``kernels/csrc``.

Sources are compiled with ``torch.utils.cpp_extension.load`` (gcc/g++, ``-O3 -march=native``)
the first time a fast kernel runs on CPU, into a folder of the build's name in torch's per-user
extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); that first
build (~75 s on 2 cores) logs a warning saying so. The name of a build carries
a hash of its sources and of the headers in ``kernels/csrc`` (their paths included), this
machine's CPU flags, torch's version and the Python environment, so an edited source or
header, another CPU, another torch, another checkout or venv builds afresh and a cached build
is reused otherwise (concurrent builds wait on torch's file lock). The path and the
environment are in the name because the build files record absolute include and source
paths: two venvs sharing one name rebuilt each other's module at every process start (~40 s
each). When no compiler is available a build fails once, a warning says why, and the fast
executors use their plain-torch path.

One build, ``kernel_ops()``: every kernel (MACE's edge convolution and symmetric contraction,
Allegro's tensor product, MLPs, geometry and tensor track, ``split_cat``, the bonds of an
edge list: ``kernel_ops.cpp``
and the sources it registers) as a library of dispatcher operators with C++ autograd
(``TORCH_LIBRARY``, no Python in it) in the namespace named by the build's hash
(``torch.ops.<namespace>``). Eager equiforce calls them and exported packages carry the
library (``equiforce.export``); ``equiforce.op_library`` loads each namespace once. A package
for other CPUs (``equiforce export --cpu-target x86-64-v3``) carries the same sources compiled
for that target (``target_kernel_ops``: ``-march=<target>`` in the flags, so a namespace of its
own).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from equiforce.build_cache import extension_cache
from equiforce.cpu_features import cpu_flag_set
from equiforce.op_library import load_op_library, loaded_op_library

_LOG = logging.getLogger(__name__)
_CSRC = Path(__file__).parent / "csrc"
_KERNEL_OP_SOURCES = (
    "kernel_ops.cpp",
    "channelwise_tp.cpp",
    "channelwise_tp_autograd.cpp",
    "symmetric_contraction.cpp",
    "symmetric_contraction_autograd.cpp",
    "allegro_product.cpp",
    "allegro_mlp.cpp",
    "allegro_geometry.cpp",
    "allegro_tensor_track.cpp",
    "split_cat.cpp",
    "edge_pairs.cpp",
)


def _flags(march: str) -> list[str]:
    """Compiler flags for ``-march=<march>``; 512-bit vectors where the target has them: the
    kernels' row loops are load/store bound."""
    return [
        "-O3",
        f"-march={march}",
        "-mprefer-vector-width=512",
        "-fopenmp-simd",
        "-ffp-contract=fast",
    ]


def _module_name(sources: tuple[Path, ...], prefix: str, flags: list[str]) -> str:
    digest = hashlib.sha256()
    # the headers every source may include count as sources
    for source in (*sources, *sorted(_CSRC.glob("*.h"))):
        digest.update(str(source.resolve()).encode())
        digest.update(source.read_bytes())
    digest.update(sys.prefix.encode())
    digest.update(platform.machine().encode())
    digest.update(" ".join(sorted(cpu_flag_set() or ())).encode())
    digest.update(" ".join(flags).encode())
    digest.update(torch.__version__.encode())
    return f"{prefix}_{digest.hexdigest()[:12]}"


class OpLibrary(NamedTuple):
    """A loaded operator library: its namespace and the shared library file."""

    namespace: str
    path: Path

    @property
    def ops(self):
        """``torch.ops.<namespace>``."""
        return getattr(torch.ops, self.namespace)


def _build(name: str, paths: tuple[Path, ...], flags: tuple[str, ...], march: str) -> str | None:
    """``torch.utils.cpp_extension.load`` of ``paths`` as the plain library ``name`` (compiled
    with ``flags``, for ``-march=<march>``), loaded; its path, or None, with a warning saying
    why, when it cannot build."""
    from torch.utils.cpp_extension import load

    folder = extension_cache() / name
    if not (folder / f"{name}.so").exists():  # say why the first call takes a while
        _LOG.warning(
            "compiling equiforce's C++ kernels for %s, this torch and checkout into %s "
            "(once; ~75 s on 2 cores)",
            "this CPU" if march == "native" else f"-march={march}",
            folder,
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return load(
            name=name,
            build_directory=str(folder),
            sources=[str(s) for s in paths],
            extra_cflags=list(flags),
            is_python_module=False,
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001  (no compiler, headers, ...: fall back, say why)
        _LOG.warning("equiforce C++ kernels unavailable (%s: %s); using torch ops", type(err), err)
        return None


def _library(march: str) -> OpLibrary | None:
    """The operator library compiled for ``-march=<march>``, built (once per source hash) and
    loaded; None if it cannot build."""
    paths = tuple(_CSRC / name for name in _KERNEL_OP_SOURCES)
    flags = _flags(march)
    name = _module_name(paths, "equiforce_kernel_ops", flags)
    if loaded_op_library(name) is None:  # not loaded yet (e.g. from a package's copy)
        path = _build(name, paths, (*flags, f"-DEQF_OPS_NAMESPACE={name}"), march)
        if path is None:
            return None
        load_op_library(name, path)  # ``load`` loaded it; record where from
    return OpLibrary(name, loaded_op_library(name))


@functools.lru_cache(maxsize=1)
def kernel_ops() -> OpLibrary | None:
    """The operator library (module docstring) for this CPU (``-march=native``), built and
    loaded on the first call; None if it cannot build."""
    return _library("native")


@functools.cache
def target_kernel_ops(march: str) -> OpLibrary | None:
    """The operator library compiled for ``-march=<march>`` (``equiforce export --cpu-target``:
    a package for other CPUs carries it), in its own namespace; ``kernel_ops()`` for
    ``native``. None if it cannot build."""
    return kernel_ops() if march == "native" else _library(march)


def kernel_ops_if_loaded() -> OpLibrary | None:
    """``kernel_ops()`` where an earlier call in this process built or loaded it, else None:
    never compiles (a caller that would only gain microseconds from the library, such as
    finding the bonds of an edge list, leaves the ~75 s build to the fast kernels)."""
    return kernel_ops() if kernel_ops.cache_info().currsize else None


@functools.cache
def library_operator(name: str) -> torch._ops.OpOverload:
    """``torch.ops.<namespace>.<name>.default`` of the library, looked up once (a call through
    the overload packet costs ~1 µs more); only where ``kernel_ops()`` built."""
    return getattr(kernel_ops().ops, name).default


def kernel_ops_apply(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the library's operators run tensors of ``device`` and ``dtype`` (CPU, float32 or
    float64, and the library builds)."""
    return (
        device.type == "cpu"
        and dtype in (torch.float32, torch.float64)
        and kernel_ops() is not None
    )
