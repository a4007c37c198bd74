"""C++ consumers of exported packages: libtorch's build flags, the shared package reader and
the stand-alone runner ``equiforce-run``.

Every C++ program that runs a package reads it through ``csrc/package_reader.cpp`` (metadata,
the torch release, format and CPU checks, the kernel library, the program): the LAMMPS pair
style's package runner (``equiforce.lammps.build``) and ``csrc/run_package.cpp``, a program
that runs any package, MACE included, on the frames of an XYZ file with no Python in the
process (its file docstring gives the command line and the JSON it prints). Both compile
against the torch wheel's libtorch (its ``include/`` and ``lib/``), as torch's own extensions
are (``-std=c++20``, torch's include paths and C++ ABI; linked to ``torch``, ``torch_cpu`` and
``c10`` with an rpath to torch's ``lib/``).

``runner_path()`` builds the runner on first use (~40 s of CPU, torch's headers) with the
environment's C++ compiler (``$CXX``, else ``c++``) into torch's per-user extension cache
(``equiforce.build_cache``: ``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), named by a hash of the sources, flags, compiler and torch
version; ``python -m equiforce.export.cpp`` builds it and prints its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from equiforce.build_cache import cached_build

__all__ = [
    "CSRC",
    "READER_SOURCES",
    "CppBuildError",
    "Libtorch",
    "libtorch",
    "run_compiler",
    "runner_path",
]

CSRC = Path(__file__).parent / "csrc"
READER_SOURCES = (CSRC / "package_reader.cpp", CSRC / "package_reader.h")
_RUNNER_SOURCES = (*READER_SOURCES, CSRC / "run_package.cpp")
_TORCH_FLAGS = ("-std=c++20", "-O2", "-fPIC")
_TORCH_LIBRARIES = ("-ltorch", "-ltorch_cpu", "-lc10")


class CppBuildError(RuntimeError):
    """A C++ consumer cannot be built here (no libtorch headers, no compiler, a failed
    compile: the compiler's output is in the message)."""


@dataclass(frozen=True)
class Libtorch:
    """What compiling and linking against the torch wheel's libtorch takes."""

    version: str
    compile_flags: tuple[str, ...]  # _TORCH_FLAGS, include paths, C++ ABI
    link_flags: tuple[str, ...]  # library path, rpath, libraries


def libtorch() -> Libtorch | None:
    """The torch wheel's libtorch, or None when its C++ headers are not installed."""
    import torch
    from torch.utils import cpp_extension

    includes = cpp_extension.include_paths()
    loader = Path(includes[0]) / "torch/csrc/inductor/aoti_package/model_package_loader.h"
    if not loader.exists():
        return None
    (lib,) = cpp_extension.library_paths()[:1]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"
    return Libtorch(
        version=torch.__version__,
        compile_flags=(*_TORCH_FLAGS, abi, *(f"-I{path}" for path in includes)),
        link_flags=(f"-L{lib}", f"-Wl,-rpath,{lib}", *_TORCH_LIBRARIES),
    )


def run_compiler(command: list[str]) -> None:
    """Run one compiler command; its output in a ``CppBuildError`` when it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise CppBuildError(f"{' '.join(command)} failed:\n{done.stderr}")


def _compiler() -> str:
    name = os.environ.get("CXX", "c++")
    found = shutil.which(name)
    if found is None:
        raise CppBuildError(f"no C++ compiler '{name}' on PATH (set CXX)")
    return found


def runner_path() -> Path:
    """The compiled ``equiforce-run`` program, building it on the first call (module
    docstring; ``equiforce.build_cache.cached_build``).

    Raises:
        CppBuildError: no libtorch headers, no compiler, or the compiler failed.
    """
    torch_build = libtorch()
    if torch_build is None:
        raise CppBuildError("torch's C++ headers are not installed (a stripped torch wheel)")
    compiler = _compiler()

    def build(target: Path) -> None:
        scratch = target.with_suffix(f".{os.getpid()}")
        sources = [str(s) for s in _RUNNER_SOURCES if s.suffix == ".cpp"]
        command = [compiler, *torch_build.compile_flags, f"-I{CSRC}", *sources, "-o"]
        try:
            run_compiler(command + [str(scratch), *torch_build.link_flags])
            os.replace(scratch, target)
        finally:
            scratch.unlink(missing_ok=True)

    settings = (compiler, torch_build.version, *torch_build.compile_flags, *torch_build.link_flags)
    return cached_build(
        "equiforce_export", "equiforce-run-{hash}", _RUNNER_SOURCES, settings, build
    )


if __name__ == "__main__":
    print(runner_path())
