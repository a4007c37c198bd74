"""Keep freed heap memory in the process instead of handing it back to the OS at every step.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves large blocks with
``mmap`` (or trims the top of its heap when more than a threshold is free), so a training or MD
step that frees and re-allocates the same multi-megabyte tensors every call — a MACE step's
(n_edges, paths x channels) radial weights and their gradients — takes a fresh page fault for
every 4 KiB page each time: 2,400-6,400 minor faults per step of the 128-channel MACE on a
batch of five AcAc molecules, ~4-5% of the step (docs/performance.md, "freed pages kept").

``retain_freed_memory`` sets glibc's thresholds once (``mallopt``): blocks below
``MMAP_THRESHOLD`` come from the heap, and up to ``TRIM_THRESHOLD`` of free memory at its top
stays mapped, so steady-state steps reuse pages that are already there. Both are 1 GiB: a
999-atom water box's MACE call allocates 141 MB radial weights and their gradient, which a 64
MiB threshold (the first setting) still mapped afresh every call: 72,000 faults and 120 ms of
system time in a 760 ms call; at 1 GiB none, the call 1.15x faster (3,000 atoms 1.2-1.4x,
10,000 atoms in chunks 1.12x), peak RSS unchanged (2.22 GB at 3,000 atoms, 0.85-0.88 GB at
10,000; docs/performance.md, "freed pages kept"). A process keeps up to ``TRIM_THRESHOLD``
more resident after a peak, and blocks below ``MMAP_THRESHOLD`` share the heap, where
fragmentation can add to a peak made of many such blocks.
The ``equiforce`` command line calls it for
every subcommand; a script that drives equiforce itself (an ASE calculator, TorchSim) may call
it too. Other C libraries (musl, macOS) are left alone, and ``EQUIFORCE_MALLOC=default``
turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["MMAP_THRESHOLD", "TOP_PAD", "TRIM_THRESHOLD", "retain_freed_memory"]

MMAP_THRESHOLD = 1 << 30  # bytes: larger blocks are mmapped (and unmapped when freed)
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept mapped
TOP_PAD = 16 << 20  # bytes added to every heap extension

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's malloc thresholds (module docstring) once per process.

    Returns:
        True if they were set; False where the C library is not glibc or
        ``EQUIFORCE_MALLOC=default`` asks for the library's defaults.
    """
    if os.environ.get("EQUIFORCE_MALLOC", "").strip().lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError outside glibc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
