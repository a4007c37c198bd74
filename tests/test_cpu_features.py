"""Instruction-set extensions: /proc/cpuinfo's, and those a compile with ``-march`` may use."""

from __future__ import annotations

import platform
import shutil

import pytest

from equiforce.cpu_features import compiled_features, cpu_flag_set, missing_features

X86 = """processor\t: 0
flags\t\t: fpu sse sse2 pni ssse3 avx avx2 fma

processor\t: 1
flags\t\t: fpu sse sse2 pni ssse3 avx avx2 fma avx512f
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16\nCPU implementer\t: 0x41\n"

needs_x86_compiler = pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("g++") is None, reason="x86-64 g++ only"
)


def test_the_first_flags_or_features_line_is_read():
    assert cpu_flag_set(X86) == {"fpu", "sse", "sse2", "pni", "ssse3", "avx", "avx2", "fma"}
    assert cpu_flag_set(ARM) == {"fp", "asimd", "sve", "bf16"}
    assert cpu_flag_set("processor\t: 0\n") is None


def test_missing_features_are_named_sorted():
    assert missing_features(["avx2", "fma"], X86) == []
    assert missing_features(["avx512f", "avx2", "avx512bw"], X86) == ["avx512bw", "avx512f"]
    assert missing_features(["sve2"], ARM) == ["sve2"]
    assert missing_features(["avx2"], "processor\t: 0\n") is None  # unreadable: not checked


@needs_x86_compiler
def test_a_targets_extensions_are_the_compilers():
    v3 = compiled_features("x86-64-v3", "g++")
    v4 = compiled_features("x86-64-v4", "g++")
    assert {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"} <= set(v3)
    assert not any(name.startswith("avx512") for name in v3)
    assert set(v3) < set(v4)
    assert {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= set(v4)
    assert "avx512_bf16" in compiled_features("x86-64-v4", "g++", ["-mavx512bf16"])
    assert v3 == sorted(v3)


@needs_x86_compiler
def test_this_cpu_has_every_extension_the_compiler_finds_for_native():
    """Each macro's name in /proc/cpuinfo is right: what ``-march=native`` enables here, this
    CPU lists (a wrong name, e.g. ``lzcnt`` for ``abm``, would be reported missing)."""
    native = compiled_features("native", "g++")
    assert "sse4_2" in native
    assert missing_features(native) == []


@needs_x86_compiler
def test_a_target_the_compiler_refuses_is_an_error_naming_it():
    with pytest.raises(ValueError, match="-march=pentium9"):
        compiled_features("pentium9", "g++")
