"""Instruction-set extensions: those this CPU has, and those compiled code may use.

Compiled C++ is tied to the instruction sets it was compiled for: AOTInductor compiles a
package's program with ``-march=<target>`` (default ``native``: every extension of the exporting
CPU), and so is the kernel library it carries (``equiforce.kernels.extension``). On a CPU without
one of them the first call dies with an illegal instruction (SIGILL), no message and no
traceback: an AVX-512 login node's package on AVX2 compute nodes. ``compiled_features`` asks the
compiler which extensions a ``-march`` value enables (its predefined macros, as
``/proc/cpuinfo`` names them), ``equiforce export`` stores them in the package, and the loaders
(``equiforce.export.package``, the LAMMPS plugin's ``aoti_model.cpp``) refuse, by name, a
package needing one this CPU lacks (``missing_features``).

Needs the standard library only (the package loader runs without the model code).
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

__all__ = ["compiled_features", "cpu_flag_set", "missing_features"]

# compiler macro -> /proc/cpuinfo name of the extension that lets a CPU run its instructions
# (x86: the "flags" line; aarch64: the "Features" line)
_MACRO_FEATURES = {
    "__SSE3__": "pni",
    "__SSSE3__": "ssse3",
    "__SSE4_1__": "sse4_1",
    "__SSE4_2__": "sse4_2",
    "__POPCNT__": "popcnt",
    "__AVX__": "avx",
    "__AVX2__": "avx2",
    "__FMA__": "fma",
    "__F16C__": "f16c",
    "__BMI__": "bmi1",
    "__BMI2__": "bmi2",
    "__LZCNT__": "abm",
    "__MOVBE__": "movbe",
    "__AVX512F__": "avx512f",
    "__AVX512CD__": "avx512cd",
    "__AVX512DQ__": "avx512dq",
    "__AVX512BW__": "avx512bw",
    "__AVX512VL__": "avx512vl",
    "__AVX512IFMA__": "avx512ifma",
    "__AVX512VBMI__": "avx512vbmi",
    "__AVX512VBMI2__": "avx512_vbmi2",
    "__AVX512VNNI__": "avx512_vnni",
    "__AVX512BITALG__": "avx512_bitalg",
    "__AVX512VPOPCNTDQ__": "avx512_vpopcntdq",
    "__AVX512BF16__": "avx512_bf16",
    "__AVX512FP16__": "avx512_fp16",
    "__AVXVNNI__": "avx_vnni",
    "__AMX_TILE__": "amx_tile",
    "__AMX_BF16__": "amx_bf16",
    "__AMX_INT8__": "amx_int8",
    "__GFNI__": "gfni",
    "__VAES__": "vaes",
    "__VPCLMULQDQ__": "vpclmulqdq",
    "__ARM_FEATURE_SVE": "sve",
    "__ARM_FEATURE_SVE2": "sve2",
    "__ARM_FEATURE_BF16": "bf16",
    "__ARM_FEATURE_MATMUL_INT8": "i8mm",
    "__ARM_FEATURE_DOTPROD": "asimddp",
}


def cpu_flag_set(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The extensions this CPU has: the first ``flags`` (x86) or ``Features`` (aarch64) line
    of /proc/cpuinfo; None where that cannot be read (another OS).

    Args:
        cpuinfo: text of /proc/cpuinfo; read from the file when None.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def compiled_features(march: str, compiler: str, extra_flags: Iterable[str] = ()) -> list[str]:
    """The extensions code compiled by ``compiler`` with ``-march=<march>`` (and
    ``extra_flags``) may use, sorted (``/proc/cpuinfo`` names of the compiler's predefined
    macros, ``_MACRO_FEATURES``).

    Args:
        march: the ``-march`` value (``native``: this CPU's, as the compiler detects it).
        compiler: a gcc- or clang-compatible C++ compiler.
        extra_flags: further instruction-set flags of the compile (e.g. ``-mavx512bf16``).

    Raises:
        ValueError: the compiler refuses ``march`` (its message included).
        OSError: no such compiler.
    """
    flag = f"-mcpu={march}" if platform.machine() == "ppc64le" else f"-march={march}"
    extra_flags = tuple(extra_flags)
    done = subprocess.run(
        [compiler, flag, *extra_flags, "-dM", "-E", "-x", "c++", "-"],
        input="",
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ValueError(f"{compiler} {flag} {' '.join(extra_flags)}: {done.stderr.strip()}")
    macros = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("#define ")}
    return sorted(_MACRO_FEATURES[m] for m in macros if m in _MACRO_FEATURES)


def missing_features(required: Iterable[str], cpuinfo: str | None = None) -> list[str] | None:
    """Those of ``required`` this CPU lacks, sorted; None where its flags cannot be read."""
    present = cpu_flag_set(cpuinfo)
    if present is None:
        return None
    return sorted(set(required) - present)
