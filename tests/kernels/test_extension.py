"""``kernels.extension``: a cached kernel build is keyed by everything that goes into it."""

from __future__ import annotations

from equiforce.kernels import extension


def test_module_name_changes_with_a_source_or_a_header(tmp_path, monkeypatch):
    monkeypatch.setattr(extension, "_CSRC", tmp_path)
    source, header = tmp_path / "kernel.cpp", tmp_path / "shared.h"
    source.write_text('#include "shared.h"\nint f() { return g(); }\n')
    header.write_text("inline int g() { return 1; }\n")
    first = extension._module_name((source,), "test")
    assert extension._module_name((source,), "test") == first
    header.write_text("inline int g() { return 2; }\n")
    second = extension._module_name((source,), "test")
    assert second != first
    source.write_text('#include "shared.h"\nint f() { return -g(); }\n')
    assert extension._module_name((source,), "test") not in (first, second)


def test_every_source_is_built_into_the_one_library():
    """One C++ mechanism: every source in ``kernels/csrc`` is compiled into the operator
    library, and none defines a Python module of its own."""
    sources = {path.name for path in extension._CSRC.glob("*.cpp")}
    assert sources == set(extension._KERNEL_OP_SOURCES)
    for name in sources:
        text = (extension._CSRC / name).read_text()
        assert "PYBIND11_MODULE" not in text and "torch/extension.h" not in text, name
