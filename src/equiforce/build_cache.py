"""Build-on-first-use of compiled artefacts in torch's per-user extension cache.

Every C++ build of equiforce lands in ``extension_cache()`` (``$TORCH_EXTENSIONS_DIR``, else
torch's default, ``~/.cache/torch_extensions``): the kernel library
(``equiforce.kernels.extension``, through ``torch.utils.cpp_extension.load``, which keeps its
own lock), the stand-alone package runner (``equiforce.export.cpp``) and the LAMMPS plugin
(``equiforce.lammps.build``). The last two build through ``cached_build``: the file's name
carries a hash of its sources and of everything else that went into it (flags, compiler,
versions), so an edited source or another toolchain builds afresh and a cached build is reused
otherwise; processes that ask at once (the ranks of one ``mpirun``, parallel tests) build
once, the others wait on a file lock beside the target (``equiforce.files.build_once``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from equiforce.files import build_once

__all__ = ["cached_build", "extension_cache"]


def extension_cache() -> Path:
    """torch's per-user extension cache (``$TORCH_EXTENSIONS_DIR`` or torch's default)."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def cached_build(
    folder: str,
    name: str,
    sources: Iterable[Path],
    settings: Iterable[str],
    build: Callable[[Path], None],
) -> Path:
    """The file ``extension_cache()/folder/name`` (``name`` holds ``{hash}``: 12 hex digits of
    the sources' bytes and the ``settings``), which ``build(target)`` makes on the first call.

    ``build`` must write ``target`` last and atomically (into a scratch file, then
    ``os.replace``): a file that exists is a finished build. Its exceptions propagate and
    leave no target.
    """
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    for setting in settings:
        digest.update(setting.encode())
    target = extension_cache() / folder / name.format(hash=digest.hexdigest()[:12])
    return build_once(target, build)
