"""Machine facts: low-precision CPU flags parsed from /proc/cpuinfo text."""

from __future__ import annotations

from equiforce.measure.machine import LOW_PRECISION_FLAGS, cpu_flags, machine_info

CPUINFO = """processor\t: 0
model name\t: Example CPU
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16

processor\t: 1
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16
"""


def test_cpu_flags_reports_each_low_precision_flag():
    flags = cpu_flags(CPUINFO)
    assert set(flags) == set(LOW_PRECISION_FLAGS)
    assert flags["avx512_bf16"] and flags["amx_bf16"] and flags["amx_tile"] and flags["avx2"]
    assert not flags["avx512_fp16"]


def test_cpu_flags_without_a_flags_line_is_empty():
    assert cpu_flags("processor\t: 0\n") == {}
    assert cpu_flags("flags\t: fpu sse2\n") == dict.fromkeys(LOW_PRECISION_FLAGS, False)


def test_machine_info_records_the_flags_and_versions():
    info = machine_info(("torch",))
    assert isinstance(info["cpu_flags"], dict)
    assert info["torch_version"] and info["git_commit"]
