"""``kernels.extension``: a cached kernel build is keyed by everything that goes into it, and
only the backends that use the library build it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from equiforce.kernels import extension


def test_module_name_changes_with_a_source_a_header_or_the_target(tmp_path, monkeypatch):
    monkeypatch.setattr(extension, "_CSRC", tmp_path)
    source, header = tmp_path / "kernel.cpp", tmp_path / "shared.h"
    source.write_text('#include "shared.h"\nint f() { return g(); }\n')
    header.write_text("inline int g() { return 1; }\n")
    native = extension._flags("native")
    first = extension._module_name((source,), "test", native)
    assert extension._module_name((source,), "test", native) == first
    avx2 = extension._module_name((source,), "test", extension._flags("x86-64-v3"))
    assert avx2 != first
    header.write_text("inline int g() { return 2; }\n")
    second = extension._module_name((source,), "test", native)
    assert second not in (first, avx2)
    source.write_text('#include "shared.h"\nint f() { return -g(); }\n')
    assert extension._module_name((source,), "test", native) not in (first, second, avx2)


def test_every_source_is_built_into_the_one_library():
    """One C++ mechanism: every source in ``kernels/csrc`` is compiled into the operator
    library, and none defines a Python module of its own."""
    sources = {path.name for path in extension._CSRC.glob("*.cpp")}
    assert sources == set(extension._KERNEL_OP_SOURCES)
    for name in sources:
        text = (extension._CSRC / name).read_text()
        assert "PYBIND11_MODULE" not in text and "torch/extension.h" not in text, name


_REFERENCE_PROCESS = textwrap.dedent(
    """
    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
    from equiforce.kernels import use_backend
    from equiforce.kernels.extension import kernel_ops
    from equiforce.testing.models import tiny_allegro, tiny_mace
    from equiforce.testing.structures import make_fcc_cu, make_molecule

    for make in (tiny_allegro, tiny_mace):
        model = use_backend(make(), "reference")
        graphs = [
            configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
            for a in (make_fcc_cu(2, seed=1), make_molecule())
        ]
        out = model(collate(graphs), compute_forces=True, compute_stress=True)
        ((out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()).backward()
    print(kernel_ops.cache_info().currsize)
    """
)


def test_a_reference_backend_process_never_builds_the_library():
    """Force training of both families on the reference backend neither builds nor loads the
    library (a peer's bench worker relies on it: a build costs ~75 s)."""
    run = subprocess.run(
        [sys.executable, "-c", _REFERENCE_PROCESS], capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == ["0"], run.stdout + run.stderr
