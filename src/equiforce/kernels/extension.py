"""Build-on-first-use loader of the C++ CPU kernels in ``kernels/csrc``.

The default sources (``channelwise_tp.cpp``, which holds the bindings, and
``symmetric_contraction.cpp``; ``cpu_kernels()``) are compiled with
``torch.utils.cpp_extension.load`` (gcc/g++, ``-O3 -march=native``) the first time a fast kernel
runs on CPU, into torch's per-user extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``). The module name carries a hash of the sources and of the
headers in ``kernels/csrc`` (their paths included), this machine's CPU flags, torch's version
and the Python environment, so an edited source or header, another CPU, another torch, another
checkout or venv builds afresh and a cached build is
reused otherwise (concurrent builds wait on torch's file lock). The path and the environment are in
the name because the build files record absolute include and source paths: two venvs sharing one
name rebuilt each other's module at every process start (~40 s each). When no compiler is available
the build fails once, a warning says why, and the fast executors use their plain-torch path.

Another set of sources (one of which holds its own ``PYBIND11_MODULE``) is a separate module:
``cpu_kernels(("allegro_mlp.cpp",))`` and ``cpu_kernels(("split_cat.cpp",))`` build and cache
the same way.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
from pathlib import Path
from types import ModuleType

import torch

_LOG = logging.getLogger(__name__)
_CSRC = Path(__file__).parent / "csrc"
_DEFAULT_SOURCES = ("channelwise_tp.cpp", "symmetric_contraction.cpp")
# 512-bit vectors where the CPU has them: the kernels' row loops are load/store bound
_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512",
          "-fopenmp-simd", "-ffp-contract=fast"]


def _cpu_fingerprint() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _module_name(sources: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    # the headers every source may include count as sources
    for source in (*sources, *sorted(_CSRC.glob("*.h"))):
        digest.update(str(source.resolve()).encode())
        digest.update(source.read_bytes())
    digest.update(sys.prefix.encode())
    digest.update(_cpu_fingerprint().encode())
    digest.update(" ".join(_FLAGS).encode())
    digest.update(torch.__version__.encode())
    return f"equiforce_cpu_kernels_{digest.hexdigest()[:12]}"


@functools.lru_cache(maxsize=8)
def cpu_kernels(sources: tuple[str, ...] = _DEFAULT_SOURCES) -> ModuleType | None:
    """The compiled kernels module, building it on the first call; None if it cannot build.

    Args:
        sources: file names in ``kernels/csrc`` compiled into one module (one of them holds
            its ``PYBIND11_MODULE``); default: the channel-wise TP and symmetric contraction.
    """
    from torch.utils.cpp_extension import load

    paths = tuple(_CSRC / name for name in sources)
    name = _module_name(paths)
    try:
        return load(
            name=name,
            sources=[str(s) for s in paths],
            extra_cflags=_FLAGS,
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001  (no compiler, headers, ...: fall back, say why)
        _LOG.warning("equiforce C++ kernels unavailable (%s: %s); using torch ops", type(err), err)
        return None
