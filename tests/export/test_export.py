"""Exported packages (``equiforce.export``): export → load → equal to eager, and every refusal.

AOTInductor compiles for ~45-70 s per tiny model on one core, so each package is exported
once per module (fixtures). The normal suite exports a float64 MACE (``fast``: its executors
through ``kernels.export_ops``, calling the C++ kernel library the package carries), a float32
Allegro and a float64 ``fast`` Allegro, the latter again for any AVX2 CPU
(``cpu_target="x86-64-v3"``: the kernel library built for that target, ~75 s once per
source hash); the other combinations are slow. Tests of the refusal and the CLI reuse a compiled
package's files in place of a new compile (``_reuse_compiled``), so they cost a trace.
The stand-alone C++ runner (``equiforce.export.cpp``, built once, ~18 s) runs two of these
packages and must equal the Python loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError

from equiforce.cli.main import main
from equiforce.cpu_features import compiled_features, cpu_flag_set, missing_features
from equiforce.data import keys
from equiforce.export import ExportedPackageError, load_exported, read_metadata
from equiforce.export.build import (
    EXPORT_TOLERANCES,
    ExportError,
    ExportValidationError,
    export_potential,
)
from equiforce.md.calculator import EquiforceCalculator
from equiforce.models import save_model
from equiforce.nn.edge_pairs import PAIR_FIRST, PAIR_INPUTS, PAIR_OF_EDGE, pair_inputs
from equiforce.precision import apply_policy, from_name
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import (
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)
from equiforce.testing.tolerances import TOL, Tolerance

STATE_SPECS = {
    "total_charge": {"type": "categorical", "emb_dim": 4, "num_classes": 5, "offset": 2},
    "total_spin": {"type": "continuous", "emb_dim": 3},
}


def _nonlinear_mace(dtype: torch.dtype, **kw):
    """One non-linear interaction (mace-torch's MH block), its species embeddings away from
    their ~1e-3 start, conditioned on the total charge and spin as MACE-OMOL is."""
    model = tiny_mace(
        dtype,
        num_interactions=1,
        nonlinear_interactions="all",
        apply_cutoff=False,
        embedding_specs=STATE_SPECS,
        embedding_readout=True,
        **kw,
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("source_embedding") or name.endswith("target_embedding"):
                parameter.normal_(generator=torch.Generator().manual_seed(4))
    return model


BUILDERS = {
    "mace": lambda dtype, **kw: tiny_mace(dtype, num_interactions=1, **kw),
    "allegro": lambda dtype, **kw: tiny_allegro(dtype, num_layers=1, **kw),
    "mace-nonlinear": _nonlinear_mace,
}
# package vs eager by precision mode; the mixed modes' is the export check's own (build.py)
TOLERANCES = {
    "float64": TOL.fp64,
    "float32": TOL.fp32,
    "bf16-mixed": Tolerance(*EXPORT_TOLERANCES["bf16"]),
    "fp16-mixed": Tolerance(*EXPORT_TOLERANCES["fp16"]),
}


def _export(
    family: str,
    dtype: torch.dtype,
    folder: Path,
    mode=None,
    backend="reference",
    per_atom: bool = True,
):
    model = BUILDERS[family](dtype).eval()
    if mode is not None:
        model = apply_policy(model, from_name(mode))
    path = folder / f"{family}.pt2"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a multi-core machine: the package must not depend on it
    try:
        metadata = export_potential(model, path, backend=backend, stress=True, per_atom=per_atom)
    finally:
        torch.set_num_threads(threads)
    return model, path, metadata


def _mode(metadata) -> str:
    return (metadata["precision"] or {}).get("name") or metadata["dtype"]


@pytest.fixture(scope="module")
def mace_fast_float64(tmp_path_factory):
    """MACE's fast kernels (export_ops: plain torch ops, weights folded), float64: exact."""
    folder = tmp_path_factory.mktemp("mace_fast64")
    return _export("mace", torch.float64, folder, backend="fast")


@pytest.fixture(scope="module")
def mace_paired_float64(tmp_path_factory):
    """The same without per-atom outputs: the program takes the edges' bonds."""
    folder = tmp_path_factory.mktemp("mace_paired64")
    return _export("mace", torch.float64, folder, backend="fast", per_atom=False)


@pytest.fixture(scope="module")
def allegro_float32(tmp_path_factory):
    return _export("allegro", torch.float32, tmp_path_factory.mktemp("allegro32"))


@pytest.fixture(scope="module")
def mace_float32(tmp_path_factory):
    return _export("mace", torch.float32, tmp_path_factory.mktemp("mace32"))


@pytest.fixture(scope="module")
def allegro_fast_float64(tmp_path_factory):
    """Allegro's fast kernels (the product as the kernel library's operators), float64."""
    folder = tmp_path_factory.mktemp("allegro_fast64")
    return _export("allegro", torch.float64, folder, backend="fast")


@pytest.fixture(scope="module")
def allegro_fast_avx2(tmp_path_factory):
    """The same compiled for any AVX2 CPU (``cpu_target="x86-64-v3"``): Inductor's code and
    the kernel library it carries."""
    if platform.machine() != "x86_64":
        pytest.skip("--cpu-target other than native: x86-64 only")
    model = BUILDERS["allegro"](torch.float64).eval()
    path = tmp_path_factory.mktemp("allegro_avx2") / "allegro.pt2"
    metadata = export_potential(
        model, path, backend="fast", stress=True, per_atom=True, cpu_target="x86-64-v3"
    )
    return model, path, metadata


@pytest.fixture(scope="module")
def allegro_bf16(tmp_path_factory):
    folder = tmp_path_factory.mktemp("allegro_bf16")
    return _export("allegro", torch.float32, folder, mode="bf16-mixed")


@pytest.fixture(scope="module")
def mace_nonlinear_fast_float64(tmp_path_factory):
    """The non-linear interaction with the fast kernels, float64 (its gate's and density's
    shapes must stay symbolic in the trace)."""
    folder = tmp_path_factory.mktemp("mace_nonlinear_fast64")
    return _export("mace-nonlinear", torch.float64, folder, backend="fast")


@pytest.fixture(scope="module")
def allegro_fp16_fast(tmp_path_factory):
    folder = tmp_path_factory.mktemp("allegro_fp16_fast")
    return _export("allegro", torch.float32, folder, mode="fp16-mixed", backend="fast")


# tf32 is float32 on CPU (its matmul setting acts on GPUs only), so it is not exported apart
@pytest.fixture(
    params=[
        "mace_fast_float64",
        "mace_nonlinear_fast_float64",
        "allegro_float32",
        "allegro_fast_float64",
        pytest.param("mace_float32", marks=pytest.mark.slow),
        pytest.param("allegro_bf16", marks=pytest.mark.slow),
        pytest.param("allegro_fp16_fast", marks=pytest.mark.slow),
    ]
)
def exported(request):
    return request.getfixturevalue(request.param)


def _assert_close(got, want, tolerance, name):
    assert torch.allclose(got, want, atol=tolerance.atol, rtol=tolerance.rtol), (
        name,
        float((got - want).abs().max()),
    )


def test_package_equals_eager_on_structures_unseen_at_export(exported):
    model, path, metadata = exported
    package = load_exported(path)
    assert metadata["backend"] == ("fast" if "fast" in str(path.parent) else "reference")
    largest_validated = max(row["n_atoms"] for row in metadata["validation"]["figures"])
    structures = [make_molecule(), make_triclinic_cu(seed=4), make_slab(), make_fcc_cu(3)]
    assert len(structures[-1]) > largest_validated  # dynamic sizes beyond any seen
    for atoms in structures:
        batch = package.batch(atoms)
        stress = bool(atoms.pbc.all())
        got = package(batch, compute_stress=stress)
        want = model(batch, compute_stress=stress, create_graph=False, compute_edge_gradients=True)
        names = [keys.ENERGY, keys.FORCES, keys.NODE_ENERGY, keys.EDGE_GRADIENT]
        for name in names + [keys.STRESS] * stress:
            assert got[name].dtype == torch.float64
            _assert_close(got[name], want[name], TOLERANCES[_mode(metadata)], name)


def test_a_package_takes_each_structures_charge_and_spin(mace_nonlinear_fast_float64):
    """A package of a charge- and spin-aware MACE takes the state as inputs: structures of
    several states equal the eager model's; a charge its table lacks is named before the
    program runs (the program holds no such check)."""
    model, path, metadata = mace_nonlinear_fast_float64
    assert {keys.TOTAL_CHARGE, keys.TOTAL_SPIN} <= set(metadata["inputs"])
    package = load_exported(path)
    energies = set()
    for charge, spin in [(0, 1), (-2, 2), (1, 3.5), (2, 1)]:
        atoms = make_molecule()
        atoms.info.update(charge=charge, spin=spin)
        batch = package.batch(atoms)
        got, want = package(batch), model(batch, create_graph=False)
        for name in (keys.ENERGY, keys.FORCES):
            _assert_close(got[name], want[name], TOL.fp64, name)
        energies.add(round(float(got[keys.ENERGY]), 6))
    assert len(energies) == 4
    atoms.info["charge"] = 3
    with pytest.raises(ValueError, match="total_charge 3: the model embeds the integers -2 to 2"):
        package(package.batch(atoms))


def test_a_mace_package_runs_its_radial_mlps_once_per_bond(mace_paired_float64, mace_fast_float64):
    """Without per-atom outputs a MACE program takes the edges' bonds (its loader finds them):
    equal to eager per edge in float64, also with each edge its own bond; a pairing that ties
    edges of different lengths changes the energy (the inputs are read, not ignored)."""
    model, path, metadata = mace_paired_float64
    assert set(PAIR_INPUTS) <= set(metadata["inputs"])
    assert not set(PAIR_INPUTS) & set(mace_fast_float64[2]["inputs"])  # per-edge gradients
    package = load_exported(path)
    model.pair_edges = False  # eager per edge
    try:
        for atoms in [make_molecule(), make_triclinic_cu(seed=4), make_slab(), make_fcc_cu(3)]:
            batch = package.batch(atoms)
            stress = bool(atoms.pbc.all())
            want = model(batch, compute_stress=stress, create_graph=False)
            bonds = pair_inputs(batch)
            assert bonds[PAIR_FIRST].shape[0] < batch[keys.EDGE_INDEX].shape[1]
            edges = torch.arange(batch[keys.EDGE_INDEX].shape[1])
            for pairs in [{}, bonds, {PAIR_FIRST: edges, PAIR_OF_EDGE: edges}]:
                got = package({**batch, **pairs}, compute_stress=stress)
                for name in [keys.ENERGY, keys.FORCES] + [keys.STRESS] * stress:
                    _assert_close(got[name], want[name], TOL.fp64, name)
        batch = package.batch(make_molecule())
        want = model(batch, create_graph=False)[keys.ENERGY]
    finally:
        model.pair_edges = True
    tied = {PAIR_FIRST: torch.zeros(1, dtype=torch.long)}  # every edge reads edge 0's radii
    tied[PAIR_OF_EDGE] = torch.zeros(batch[keys.EDGE_INDEX].shape[1], dtype=torch.long)
    assert (package({**batch, **tied})[keys.ENERGY] - want).abs().max() > 1e-3


def test_package_kernels_are_serial_whatever_the_threads_of_the_export(mace_fast_float64):
    """Parallel (OpenMP) kernels would scatter-add atomically, 2-5x slower (docs/export.md)."""
    _, path, _ = mace_fast_float64
    with zipfile.ZipFile(path) as archive:
        sources = [archive.read(n).decode() for n in archive.namelist() if n.endswith(".cpp")]
    assert sources
    assert not any("#pragma omp parallel" in text or "atomic_add" in text for text in sources)


def test_package_metadata_describes_model_and_validation(allegro_float32):
    model, path, written = allegro_float32
    metadata = read_metadata(path)
    assert metadata == json.loads(json.dumps(written))
    assert metadata["type_names"] == list(model.type_names)
    assert metadata["r_max"] == model.r_max
    assert metadata["dtype"] == "float32"
    assert metadata["torch_version"] == torch.__version__
    outputs = ["energy", "forces", "stress", "virial", "node_energy", "edge_gradient"]
    assert metadata["outputs"] == outputs
    assert metadata["threads"] == 1
    figures = metadata["validation"]["figures"]
    assert [row["structure"] for row in figures] == ["molecule", "periodic", "slab", "large"]
    assert all(row["within_tolerance"] for row in figures)
    runner_metadata = load_exported(path).runner.get_metadata()  # what C++ loaders read
    assert json.loads(runner_metadata["equiforce.type_names"]) == list(model.type_names)


def test_loading_a_package_imports_no_model_or_training_code(allegro_float32):
    _, path, _ = allegro_float32
    script = f"""
import sys
from ase.build import molecule
from equiforce.md.calculator import EquiforceCalculator
atoms = molecule("CH3CH2OH")
atoms.calc = EquiforceCalculator({str(path)!r})
print(atoms.get_potential_energy(), atoms.get_forces().shape)
loaded = sorted(m for m in sys.modules if m.startswith(("equiforce.models", "equiforce.train")))
assert not loaded, loaded
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "(9, 3)" in result.stdout


def test_calculator_over_package_equals_calculator_over_model(allegro_float32):
    model, path, _ = allegro_float32
    atoms = make_triclinic_cu(seed=5)
    results = []
    for calculator in (EquiforceCalculator(path), EquiforceCalculator(model)):
        atoms.calc = calculator
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, atol=TOL.fp32.atol, rtol=TOL.fp32.rtol)
    with pytest.raises(ValueError, match="runs as exported"):
        EquiforceCalculator(path, precision="float64")
    # several structures (a NEB's band): the package takes one graph per call
    frames = [atoms, make_triclinic_cu(seed=6) * (1, 2, 1)]
    energies, forces = EquiforceCalculator(path).energies_and_forces(frames)
    reference = EquiforceCalculator(model).energies_and_forces(frames)
    np.testing.assert_allclose(energies, reference[0], atol=TOL.fp32.atol, rtol=TOL.fp32.rtol)
    for got, want in zip(forces, reference[1], strict=True):
        np.testing.assert_allclose(got, want, atol=TOL.fp32.atol, rtol=TOL.fp32.rtol)


def test_per_atom_energies_and_stresses_of_a_package_equal_the_models(
    allegro_fast_float64, mace_paired_float64
):
    """A ``--per-atom`` package gives the calculator per-atom energies and stresses (from its
    edge gradients) equal to the model file's to 1e-10; one exported without says so."""
    model, path, _ = allegro_fast_float64
    atoms = make_triclinic_cu(seed=5) * (2, 1, 1)
    results = []
    for calculator in (EquiforceCalculator(path), EquiforceCalculator(model)):
        atoms.calc = calculator
        results.append((atoms.get_potential_energies(), atoms.get_stresses()))
    for got, want in zip(*results, strict=True):
        _assert_close(torch.from_numpy(got), torch.from_numpy(want), TOL.fp64, "per atom")
    atoms.calc = EquiforceCalculator(mace_paired_float64[1])
    for ask in (atoms.get_potential_energies, atoms.get_stresses):
        with pytest.raises(PropertyNotImplementedError, match="equiforce export --per-atom"):
            ask()


def test_species_the_model_lacks_are_named(allegro_float32):
    package = load_exported(allegro_float32[1])
    with pytest.raises(ValueError, match="element N .* unknown to the model"):
        package.batch(make_molecule("CH3CN"))


def _copy_with_metadata(source: Path, target: Path, **changes) -> None:
    """Copy a package, changing fields of its equiforce metadata."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.endswith("/extra/equiforce.json"):
                data = json.dumps({**json.loads(data), **changes}).encode()
            new.writestr(item, data)


def test_package_from_another_torch_release_is_refused(allegro_float32, tmp_path):
    other = tmp_path / "old.pt2"
    _copy_with_metadata(allegro_float32[1], other, torch_version="2.9.1+cpu")
    with pytest.raises(ExportedPackageError, match="exported with torch 2.9.1"):
        load_exported(other)


def test_package_on_another_device_is_refused(allegro_float32, tmp_path):
    with pytest.raises(ExportedPackageError, match="compiled for device 'cpu'.*'cuda'"):
        load_exported(allegro_float32[1], device="cuda")
    cuda_package = tmp_path / "cuda.pt2"
    _copy_with_metadata(allegro_float32[1], cuda_package, device="cuda")
    with pytest.raises(ExportedPackageError, match="compiled for device 'cuda'"):
        load_exported(cuda_package, device="cpu")


def test_a_cpu_without_an_extension_the_package_uses_is_refused(allegro_float32, tmp_path):
    """The package names the instruction-set extensions its compiled code may use (here: this
    CPU's, as the compiler sees it); one this CPU lacks, or another machine type, is refused
    by name before its code runs (it would die of an illegal instruction)."""
    cpu = read_metadata(allegro_float32[1])["cpu"]
    assert cpu["machine"] == platform.machine() and cpu["target"] == "native"
    assert missing_features(cpu["features"]) == []
    if platform.machine() == "x86_64" and shutil.which("g++"):
        assert set(compiled_features("native", "g++")) <= set(cpu["features"])
    newer = tmp_path / "newer.pt2"
    _copy_with_metadata(
        allegro_float32[1], newer, cpu={**cpu, "features": cpu["features"] + ["avx_future9"]}
    )
    message = r"compiled for CPUs with avx_future9 \(equiforce export --cpu-target native\)"
    with pytest.raises(ExportedPackageError, match=message + ", which this CPU lacks"):
        load_exported(newer)
    other = tmp_path / "riscv.pt2"
    _copy_with_metadata(allegro_float32[1], other, cpu={**cpu, "machine": "riscv64"})
    with pytest.raises(ExportedPackageError, match="compiled for riscv64 CPUs, this is"):
        load_exported(other)


# what only AVX-512 encodes: 512-bit and opmask registers, vector registers 16-31
_AVX512_OPERANDS = re.compile(r"%zmm|%k[0-7]|%[xy]mm(1[6-9]|2[0-9]|3[01])\b")


def _avx512_instructions(library: Path) -> int:
    disassembly = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in disassembly.splitlines() if _AVX512_OPERANDS.search(line))


def _compiled_files(package: Path, folder: Path) -> list[Path]:
    """The package's shared objects (program and kernel library), unpacked into ``folder``."""
    files = []
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.endswith(".so"):
                files.append(folder / Path(name).name)
                files[-1].write_bytes(archive.read(name))
    return files


def _torch_package_warnings(load) -> list[str]:
    """The messages torch's package loader logs while ``load()`` runs."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("torch.export.pt2_archive._package")
    logger.addHandler(handler)
    try:
        load()
    finally:
        logger.removeHandler(handler)
    return messages


def test_a_package_for_avx2_cpus_holds_no_avx512_code_and_equals_this_cpus(
    allegro_fast_avx2, allegro_fast_float64, tmp_path
):
    """``--cpu-target x86-64-v3``: the program and the kernel library it carries (its own
    build, namespace and checksum) are compiled for AVX2; no instruction in either is AVX-512
    (the ``native`` package's are, where this CPU has AVX-512); forces equal the native
    package's to 1e-10."""
    if shutil.which("objdump") is None or not _kernels_built():
        pytest.skip("needs objdump and the C++ kernels")
    model, path, metadata = allegro_fast_avx2
    assert metadata["cpu"]["target"] == "x86-64-v3"
    assert metadata["cpu"]["features"] == compiled_features("x86-64-v3", "g++")
    library = metadata["kernel_library"]
    native = read_metadata(allegro_fast_float64[1])
    assert library["namespace"] != native["kernel_library"]["namespace"]
    assert {op.split("::")[1] for op in library["operators"]} == {
        op.split("::")[1] for op in native["kernel_library"]["operators"]
    }
    (tmp_path / "avx2").mkdir()
    files = _compiled_files(path, tmp_path / "avx2")
    assert len(files) == 2 and any(f.name == f"{library['namespace']}.so" for f in files)
    assert [_avx512_instructions(f) for f in files] == [0, 0]
    if "avx512f" in (cpu_flag_set() or ()):
        (tmp_path / "native").mkdir()
        native_files = _compiled_files(allegro_fast_float64[1], tmp_path / "native")
        assert all(_avx512_instructions(f) > 0 for f in native_files)
    messages = _torch_package_warnings(lambda: load_exported(path))
    assert not [m for m in messages if "AOTI_CPU_ISA" in m]  # checked: no stray warning
    portable, here = load_exported(path), load_exported(allegro_fast_float64[1])
    for atoms in [make_molecule(), make_fcc_cu(3)]:
        batch = here.batch(atoms)
        want = model(batch, create_graph=False, compute_edge_gradients=True)
        got = portable(batch)
        for name in (keys.ENERGY, keys.FORCES, keys.EDGE_GRADIENT):
            _assert_close(got[name], want[name], TOL.fp64, name)
            _assert_close(got[name], here(batch)[name], TOL.fp64, name)


def test_a_cpu_target_the_compiler_refuses_is_named_before_tracing():
    if platform.machine() != "x86_64" or shutil.which("g++") is None:
        pytest.skip("x86-64 g++ only")
    model = BUILDERS["allegro"](torch.float64).eval()
    with pytest.raises(ExportError, match="--cpu-target pentium9: .*-march=pentium9"):
        export_potential(model, "never.pt2", cpu_target="pentium9")


def test_truncated_or_corrupted_package_is_refused(allegro_float32, tmp_path):
    data = allegro_float32[1].read_bytes()
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportedPackageError, match="truncated or corrupted"):
        load_exported(truncated)
    corrupted = tmp_path / "corrupted.pt2"
    flipped = bytearray(data)
    middle = len(data) // 2
    flipped[middle : middle + 64] = bytes(b ^ 0xFF for b in flipped[middle : middle + 64])
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(ExportedPackageError, match="corrupted"):
        load_exported(corrupted)
    foreign = tmp_path / "foreign.pt2"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("m/archive_format", "pt2")
    with pytest.raises(ExportedPackageError, match="not written by equiforce export"):
        load_exported(foreign)


def _reuse_compiled(monkeypatch, package: Path, folder: Path) -> None:
    """Make ``torch._inductor.aot_compile`` return ``package``'s compiled files (no compile)."""
    files = []
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if "/data/aotinductor/model/" in name:
                files.append(folder / Path(name).name)
                files[-1].write_bytes(archive.read(name))
    monkeypatch.setattr(torch._inductor, "aot_compile", lambda *args, **kw: list(map(str, files)))


def test_export_refuses_a_package_that_disagrees_with_eager(allegro_float32, tmp_path, monkeypatch):
    _reuse_compiled(monkeypatch, allegro_float32[1], tmp_path)
    other_weights = BUILDERS["allegro"](torch.float32, seed=12)  # the package has seed 11's
    target = tmp_path / "refused.pt2"
    with pytest.raises(ExportValidationError, match="beyond the float32 tolerance") as info:
        export_potential(other_weights, target, stress=True, per_atom=True)
    assert not target.exists()
    assert not any(row["within_tolerance"] for row in info.value.figures)
    assert "FAILS" in str(info.value)


def test_cli_exports_a_model_file_and_prints_the_check(
    allegro_float32, tmp_path, monkeypatch, capsys
):
    model, package, _ = allegro_float32
    _reuse_compiled(monkeypatch, package, tmp_path)
    save_model(model, tmp_path / "model.pt")
    out = tmp_path / "model.pt2"
    argv = ["export", str(tmp_path / "model.pt"), str(out), "--stress", "--per-atom"]
    assert main(argv + ["--max-atoms", "80"]) == 0
    printed = capsys.readouterr().out
    assert "large" in printed
    assert read_metadata(out)["family"] == "allegro"
    assert read_metadata(out)["max_atoms"] == 80
    assert f"compiled for {platform.machine()} CPUs with: " in printed
    assert main(["export", str(tmp_path / "model.pt"), str(tmp_path / "model.bin")]) == 2
    if platform.machine() == "x86_64":  # the target reaches the export (the compile is reused)
        assert main(argv + ["--cpu-target", "x86-64-v3"]) == 0
        assert read_metadata(out)["cpu"]["target"] == "x86-64-v3"


def test_cli_names_the_kernel_library_a_mace_package_carries(
    mace_fast_float64, tmp_path, monkeypatch, capsys
):
    if not _kernels_built():
        pytest.skip("the C++ kernels do not build here: the package runs plain torch ops")
    model, package, _ = mace_fast_float64
    _reuse_compiled(monkeypatch, package, tmp_path)
    save_model(model, tmp_path / "model.pt")
    argv = ["export", str(tmp_path / "model.pt"), str(tmp_path / "model.pt2")]
    assert main(argv + ["--stress", "--per-atom"]) == 0
    library = read_metadata(tmp_path / "model.pt2")["kernel_library"]
    printed = f"carries the kernel library {library['namespace']} ({len(library['operators'])} "
    assert printed in capsys.readouterr().out
    assert load_exported(tmp_path / "model.pt2")(load_exported(package).batch(make_slab()))


@torch.library.custom_op("equiforce_test::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@_twice.register_fake
def _(x):
    return torch.empty_like(x)


def test_custom_ops_other_than_the_kernel_librarys_are_refused():
    from torch.fx.experimental.proxy_tensor import make_fx

    from equiforce.export import build

    graph = make_fx(lambda x: _twice(x).sum())(torch.ones(3))
    with pytest.raises(ExportError, match="custom ops .*equiforce_test::twice"):
        build._kernel_library(graph, "native")


def _kernels_built() -> bool:
    from equiforce.kernels.extension import kernel_ops

    return kernel_ops() is not None


def test_packages_carry_the_kernel_library_they_call(
    mace_fast_float64, allegro_fast_float64, allegro_float32
):
    from equiforce.kernels.extension import kernel_ops

    if not _kernels_built():
        pytest.skip("the C++ kernels do not build here: the package runs plain torch ops")
    library = read_metadata(mace_fast_float64[1])["kernel_library"]
    assert library["namespace"] == kernel_ops().namespace
    for name in ("cwtp_node_out", "cwtp_edge_r", "cwtp_edge_s", "sc_forward", "sc_gradient"):
        assert f"{library['namespace']}::{name}" in library["operators"]
    with zipfile.ZipFile(mace_fast_float64[1]) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("/" + library["file"])]
        data = archive.read(member)
    assert hashlib.sha256(data).hexdigest() == library["sha256"] and len(data) == library["bytes"]
    assert read_metadata(allegro_float32[1])["kernel_library"] is None  # reference: aten ops
    allegro_library = read_metadata(allegro_fast_float64[1])["kernel_library"]
    assert allegro_library["namespace"] == library["namespace"]
    # the general-mode product's forward and its gradient with respect to the pair features
    assert f"{library['namespace']}::allegro_gather_contract" in allegro_library["operators"]


@pytest.mark.parametrize("cache", ["writable", "unwritable"])
def test_a_fresh_process_runs_a_mace_package_from_its_own_library(
    mace_fast_float64, tmp_path, cache
):
    """Without equiforce's kernels built or imported: the package's copy is unpacked into
    the cache (or, where that cannot be written, a temporary folder) and loaded, and finds
    the bonds too; forces equal eager's to 1e-10 (float64)."""
    from ase.io import read, write

    if not _kernels_built():
        pytest.skip("the C++ kernels do not build here: the package runs plain torch ops")
    model, path, _ = mace_fast_float64
    write(tmp_path / "slab.xyz", make_slab(seed=4))
    atoms = read(tmp_path / "slab.xyz")  # the positions as the child reads them
    package = load_exported(path)
    want = model(package.batch(atoms), compute_forces=True)["forces"].detach().numpy()
    np.save(tmp_path / "forces.npy", want)
    script = f"""
import sys
import numpy as np
from ase.io import read
from equiforce.export import load_exported
package = load_exported({str(path)!r})
assert package._bond_pairs is not None  # the bonds found by the package's own library
forces = package(package.batch(read({str(tmp_path / "slab.xyz")!r})))["forces"].numpy()
deviation = np.abs(forces - np.load({str(tmp_path / "forces.npy")!r})).max()
assert deviation < 1e-10, deviation
loaded = sorted(m for m in sys.modules if m.startswith(("equiforce.kernels", "equiforce.models")))
assert not loaded, loaded
print("deviation", deviation)
"""
    folder = tmp_path / "cache"
    if cache == "unwritable":
        folder.write_text("a file where the cache folder would be")
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EQUIFORCE_CACHE": str(folder)},
    )
    assert result.returncode == 0, result.stderr
    assert "deviation" in result.stdout
    if cache == "writable":
        assert [f.name.split("-")[0] for f in (folder / "kernels").iterdir()] == [
            read_metadata(path)["kernel_library"]["namespace"]
        ]


def test_a_damaged_or_missing_kernel_library_is_refused(mace_fast_float64, tmp_path):
    if not _kernels_built():
        pytest.skip("the C++ kernels do not build here: the package runs plain torch ops")
    library = read_metadata(mace_fast_float64[1])["kernel_library"]
    # another namespace, so that this process (which has the real one loaded) reads the file
    other = {**library, "namespace": "equiforce_kernel_ops_000000000000"}
    damaged = tmp_path / "damaged.pt2"
    _copy_with_metadata(mace_fast_float64[1], damaged, kernel_library={**other, "sha256": "0" * 64})
    with pytest.raises(ExportedPackageError, match="does not match its sha256"):
        load_exported(damaged)
    missing = tmp_path / "missing.pt2"
    gone = {**other, "file": "equiforce_kernels/gone.so"}
    _copy_with_metadata(mace_fast_float64[1], missing, kernel_library=gone)
    with pytest.raises(ExportedPackageError, match="gone.so is missing from the archive"):
        load_exported(missing)


def test_md_cli_runs_a_package(allegro_float32, tmp_path):
    from ase.io import write

    write(tmp_path / "start.xyz", make_fcc_cu(repeat=1, seed=1))
    out = tmp_path / "run"
    argv = ["md", str(allegro_float32[1]), str(tmp_path / "start.xyz"), "--ensemble", "nve"]
    assert main(argv + ["--steps", "4", "--log-interval", "2", "--out", str(out)]) == 0
    assert json.loads((out / "md_summary.json").read_text())["n_steps"] == 4


def test_bench_times_a_package_as_exported(allegro_float32, tmp_path, capsys):
    model, path, _ = allegro_float32
    out = tmp_path / "bench"
    argv = ["bench", str(path), "--systems", "molecule", "--repeats", "2", "--warmup", "1"]
    assert main(argv + ["--threads", "1", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["model"]["family"] == "allegro"
    assert report["model"]["package"]["dtype"] == "float32"
    assert report["settings"]["precision"] == "float32"  # taken from the package
    (result,) = report["results"]
    ours = result["implementations"]["equiforce"]
    assert ours["info"]["package"] is True
    assert ours["info"]["n_atoms"] == 15 and len(ours["times_ms"]) == 2
    capsys.readouterr()
    refused = [["--backend", "fast"], ["--compile"], ["--precision", "float64"]]
    refused += [["--exported", "reference"], ["--peers"]]
    for option in refused:
        assert main(["bench", str(path), "--systems", "molecule", *option]) == 2
        assert f"timed as exported: {option[0]}" in capsys.readouterr().err
    assert main(["bench", str(path), "--systems", "batch4"]) == 2
    assert "one structure per call" in capsys.readouterr().err


def test_bench_leaves_batches_out_of_a_packages_default_systems(allegro_float32):
    from equiforce.cli.bench import default_systems
    from equiforce.workflows.bench.options import Variant
    from equiforce.workflows.bench.run import BenchConfig
    from equiforce.workflows.bench.systems import DEFAULT_SYSTEMS

    assert default_systems("model.pt") == DEFAULT_SYSTEMS
    assert "batch64" in DEFAULT_SYSTEMS
    assert default_systems(str(allegro_float32[1])) == ("molecule", "box-3000")
    exported = (Variant("exported", export_backend="reference"),)
    with pytest.raises(ValueError, match="one structure per call.*'batch4'"):
        BenchConfig(preset="allegro-tiny", systems=("molecule", "batch4"), variants=exported)


def test_max_atoms_bounds_the_atom_axis_and_refuses_larger_structures(
    allegro_float32, tmp_path, monkeypatch
):
    from equiforce.export import build

    model, compiled, _ = allegro_float32
    with pytest.raises(ExportError, match="--max-atoms 20 is below .*'large', 64 atoms"):
        export_potential(model, tmp_path / "small.pt2", max_atoms=20)
    with pytest.raises(ExportError, match="threads must be >= 1, got 0"):
        export_potential(model, tmp_path / "serial.pt2", threads=0)
    _reuse_compiled(monkeypatch, compiled, tmp_path)
    programs = []

    def recording(*args):
        programs.append(build_exported_program(*args))
        return programs[-1]

    build_exported_program = build._exported_program
    monkeypatch.setattr(build, "_exported_program", recording)
    path = tmp_path / "bounded.pt2"
    export_potential(model, path, stress=True, per_atom=True, max_atoms=100)
    bounds = {(str(r.lower), str(r.upper)) for r in programs[0][0].range_constraints.values()}
    assert bounds == {("2", "100"), ("2", "int_oo")}  # atoms; edges stay unbounded
    assert read_metadata(path)["max_atoms"] == 100
    package = load_exported(path)
    fits, too_large = make_fcc_cu(2), make_fcc_cu(3)  # 32 and 108 atoms
    assert len(fits) <= 100 < len(too_large)
    want = model(package.batch(fits), create_graph=False)[keys.ENERGY]
    _assert_close(package(package.batch(fits))[keys.ENERGY], want, TOL.fp32, "energy")
    with pytest.raises(ValueError, match="--max-atoms 100; the structure has 108 atoms"):
        package(package.batch(too_large))
    too_large.calc = EquiforceCalculator(path)
    with pytest.raises(ValueError, match="--max-atoms 100"):
        too_large.get_potential_energy()


def test_a_native_package_asks_only_what_this_cpus_kernel_lists(monkeypatch):
    """The compiler reads cpuid; /proc/cpuinfo leaves out what the operating system does not
    enable (AMX under an older kernel). A native package asks other CPUs only for what this
    one lists, so it loads (and validates) where it was exported; a named target asks for all
    its extensions."""
    from equiforce.export import build

    if platform.machine() != "x86_64" or shutil.which("g++") is None:
        pytest.skip("x86-64 g++ only")
    native = build._cpu_target("native", torch.device("cpu"))[1]["features"]
    hidden = frozenset(native) - {"avx2"}
    monkeypatch.setattr(build, "cpu_flag_set", lambda: hidden)
    assert build._cpu_target("native", torch.device("cpu"))[1]["features"] == sorted(hidden)
    avx2 = build._cpu_target("x86-64-v3", torch.device("cpu"))[1]["features"]
    assert "avx2" in avx2 and avx2 == compiled_features("x86-64-v3", "g++")


@pytest.fixture(scope="module")
def runner() -> Path:
    """``equiforce-run``, the stand-alone C++ program (``equiforce.export.cpp``)."""
    from equiforce.export.cpp import libtorch, runner_path

    if libtorch() is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("torch's C++ headers or a C++ compiler are not installed")
    return runner_path()


def _run_cpp(runner: Path, package: Path, structures: Path, *options: str):
    """``equiforce-run`` in a process with no Python: its JSON lines, or its error."""
    done = subprocess.run(
        [str(runner), str(package), str(structures), *options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        return done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("fixture", ["mace_paired_float64", "allegro_fast_float64"])
def test_the_cpp_runner_equals_the_python_loader(fixture, runner, tmp_path, request):
    """A MACE package (its inputs include the bonds, which the C++ neighbour list makes) and
    an Allegro package with the kernel library, run by a C++ program on a molecule, a triclinic
    cell smaller than the cutoff's reach, a slab (mixed pbc), a larger box and two molecules
    300 Å apart (the search's bins grow rather than fill the space between), all frames of one
    extended XYZ file: energy, forces and stress equal the Python loader's to 1e-10 (float64)."""
    from ase.io import read, write

    _, path, _ = request.getfixturevalue(fixture)
    apart = make_molecule() + make_molecule(seed=1)
    apart.positions[len(apart) // 2 :] += (300.0, 20.0, -5.0)
    structures = [make_molecule(), make_triclinic_cu(seed=4), make_slab(), make_fcc_cu(3), apart]
    structures[2].positions[:2] += structures[2].cell[0] * 1.5  # atoms outside their cell
    write(tmp_path / "frames.xyz", structures, format="extxyz")
    structures = read(tmp_path / "frames.xyz", index=":")  # the positions as the program reads
    rows = _run_cpp(runner, path, tmp_path / "frames.xyz", "--stress", "--repeat", "2")
    assert isinstance(rows, list), rows
    assert [row["frame"] for row in rows] == list(range(len(structures)))
    package = load_exported(path)
    for atoms, row in zip(structures, rows, strict=True):
        batch = package.batch(atoms)
        want = package(batch, compute_stress=True)
        assert row["n_atoms"] == len(atoms)
        assert row["n_edges"] == batch[keys.EDGE_INDEX].shape[1]
        assert row["call_cpu_ms"] > 0
        for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
            got = torch.tensor(row[name], dtype=torch.float64).reshape(want[name].shape)
            scale = float(want[name].abs().max()) or 1.0
            _assert_close(got, want[name], Tolerance(rtol=0, atol=1e-10 * scale), name)


def test_the_cpp_runner_takes_the_charge_and_spin(
    mace_nonlinear_fast_float64, allegro_fast_float64, runner, tmp_path
):
    """A charge- and spin-aware MACE package in C++: ``--charge -1 --spin 2`` gives the Python
    loader's energy and forces of the molecule with that ``info`` (1e-10); a charge outside
    the model's table, and a charge for a package that takes none, are refused by name."""
    from ase.io import read, write

    _, path, _ = mace_nonlinear_fast_float64
    write(tmp_path / "mol.xyz", make_molecule(), format="extxyz")
    atoms = read(tmp_path / "mol.xyz")
    rows = _run_cpp(runner, path, tmp_path / "mol.xyz", "--charge", "-1", "--spin", "2")
    assert isinstance(rows, list), rows
    atoms.info.update(charge=-1, spin=2)
    package = load_exported(path)
    want = package(package.batch(atoms))
    for name in (keys.ENERGY, keys.FORCES):
        got = torch.tensor(rows[0][name], dtype=torch.float64).reshape(want[name].shape)
        _assert_close(got, want[name], Tolerance(rtol=0, atol=1e-10), name)
    neutral = _run_cpp(runner, path, tmp_path / "mol.xyz")
    assert abs(neutral[0]["energy"] - rows[0]["energy"]) > 1e-6
    error = _run_cpp(runner, path, tmp_path / "mol.xyz", "--charge", "3")
    assert "--charge 3.000000: the model embeds the integers -2 to 2 only" in error
    error = _run_cpp(runner, allegro_fast_float64[1], tmp_path / "mol.xyz", "--charge", "1")
    assert "--charge: the package does not condition on total_charge" in error


@pytest.mark.parametrize("fixture", ["mace_paired_float64", "allegro_fast_float64"])
def test_the_cpp_runner_runs_md_as_ases_velocity_verlet(fixture, runner, tmp_path, request):
    """``equiforce-run --md``: 40 steps of 1 fs from a molecule and from a periodic cell with
    momenta (an atom starting outside the cell, hot enough for atoms to move 0.1-0.3 Å),
    Python-free, equal ASE's ``VelocityVerlet`` over the Python loader's calculator at every
    10th step: positions, velocities, potential and kinetic energy (float64, 1e-9)."""
    from ase import units
    from ase.io import read, write
    from ase.md.verlet import VelocityVerlet

    _, path, _ = request.getfixturevalue(fixture)
    for atoms, kelvin in ((make_molecule(), 600.0), (make_fcc_cu(3), 3000.0)):
        if atoms.pbc.any():
            atoms.positions[0] -= atoms.cell[1] * 1.2  # outside the cell
        sigma = np.sqrt(atoms.get_masses() * units.kB * kelvin)[:, None]  # Maxwell-Boltzmann
        atoms.set_momenta(sigma * np.random.default_rng(3).standard_normal((len(atoms), 3)))
        write(tmp_path / "start.xyz", atoms, format="extxyz")
        start = read(tmp_path / "start.xyz")  # positions and momenta as the program reads them
        assert np.abs(start.get_momenta()).max() > 0
        options = ("--md", "40", "--timestep", "1.0", "--every", "10")
        rows = _run_cpp(runner, path, tmp_path / "start.xyz", *options)
        assert isinstance(rows, list), rows
        timing = rows.pop()
        assert timing["md_steps"] == 40 and timing["step_cpu_ms"] >= timing["call_cpu_ms"] > 0
        assert [row["step"] for row in rows] == [0, 10, 20, 30, 40]
        start.calc = EquiforceCalculator(str(path))
        dynamics = VelocityVerlet(start, timestep=1.0 * units.fs)
        moved = 0.0
        for index, row in enumerate(rows):
            if index:
                dynamics.run(10)
            moved = max(moved, float(np.abs(start.positions - atoms.positions).max()))
            np.testing.assert_allclose(row["positions"], start.positions, rtol=0, atol=1e-9)
            np.testing.assert_allclose(
                row["velocities"], start.get_velocities() * units.fs, rtol=0, atol=1e-9
            )
            assert row["time_fs"] == pytest.approx(row["step"] * 1.0)
            assert row["energy"] == pytest.approx(start.get_potential_energy(), abs=1e-9)
            assert row["kinetic_energy"] == pytest.approx(start.get_kinetic_energy(), abs=1e-9)
            assert row["temperature_K"] == pytest.approx(start.get_temperature(), rel=1e-9)
        assert moved > 0.05  # the dynamics moved the atoms


@pytest.mark.parametrize(
    "thermostat", [(), ("--temperature", "600", "--friction", "0.02", "--seed", "3")]
)
def test_the_cpp_runners_trajectory_reads_in_ase_and_restarts_exactly(
    mace_paired_float64, runner, tmp_path, thermostat
):
    """``--trajectory``: the printed states as extended XYZ that ASE reads (energy, momenta,
    forces) and the runner restarts from: 20 steps, then 10 from the last frame (its
    ``step=20`` continues the numbering and the Langevin noise), equal 30 in one run bit for
    bit (NVE and Langevin, a periodic cell)."""
    from ase import units
    from ase.io import read, write

    _, path, _ = mace_paired_float64
    atoms = make_fcc_cu(3)
    sigma = np.sqrt(atoms.get_masses() * units.kB * 1000.0)[:, None]
    atoms.set_momenta(sigma * np.random.default_rng(5).standard_normal((len(atoms), 3)))
    write(tmp_path / "start.xyz", atoms, format="extxyz")
    options = ("--timestep", "1.0", "--every", "10", *thermostat)

    def md(start: Path, steps: int, trajectory: Path):
        rows = _run_cpp(
            runner, path, start, "--md", str(steps), *options, "--trajectory", str(trajectory)
        )
        assert isinstance(rows, list), rows
        return rows[:-1]

    first = md(tmp_path / "start.xyz", 20, tmp_path / "first.xyz")
    frames = read(tmp_path / "first.xyz", index=":")
    assert [frame.info["step"] for frame in frames] == [0, 10, 20]
    for frame, row in zip(frames, first, strict=True):
        assert frame.get_potential_energy() == row["energy"]
        np.testing.assert_array_equal(frame.positions, row["positions"])
        np.testing.assert_allclose(
            frame.get_velocities() * units.fs, row["velocities"], rtol=1e-12, atol=1e-15
        )
        assert np.abs(frame.get_forces()).max() > 0
    lines = (tmp_path / "first.xyz").read_text().splitlines()
    (tmp_path / "last.xyz").write_text("\n".join(lines[-(len(atoms) + 2) :]) + "\n")
    restarted = md(tmp_path / "last.xyz", 10, tmp_path / "second.xyz")
    whole = md(tmp_path / "start.xyz", 30, tmp_path / "whole.xyz")
    assert [row["step"] for row in restarted] == [20, 30]
    assert [row["time_fs"] for row in restarted] == [20.0, 30.0]
    for key in ("positions", "velocities", "energy"):
        np.testing.assert_array_equal(restarted[-1][key], whole[-1][key])
    assert [frame.info["step"] for frame in read(tmp_path / "second.xyz", index=":")] == [20, 30]


def test_the_cpp_runners_langevin_dynamics_holds_its_temperature(
    mace_paired_float64, runner, tmp_path
):
    """``--temperature 400 --friction 0.2``: the BAOAB Langevin dynamics of a molecule from
    Maxwell-Boltzmann momenta keeps a mean kinetic temperature of 400 K (over the last 1,100
    of 1,200 steps of 0.5 fs, sampled every 10, ~5 correlation times apart: within 8 %, ~3
    standard errors for its 3N = 27 degrees of freedom); the same seed repeats the run
    exactly (its first 100 steps), another seed does not."""
    from ase.io import write

    _, path, _ = mace_paired_float64
    write(tmp_path / "start.xyz", make_molecule(), format="extxyz")  # no momenta: drawn at T

    def temperatures(steps: int, *options: str) -> np.ndarray:
        rows = _run_cpp(runner, path, tmp_path / "start.xyz", "--md", str(steps), *options)
        assert isinstance(rows, list), rows
        return np.array([row["temperature_K"] for row in rows[:-1]])

    thermostat = ("--timestep", "0.5", "--every", "10", "--temperature", "400")
    held = temperatures(1200, *thermostat, "--friction", "0.2", "--seed", "7")
    assert held[0] > 0  # Maxwell-Boltzmann momenta at the start
    assert np.mean(held[10:]) == pytest.approx(400.0, rel=0.08)
    again = temperatures(100, *thermostat, "--friction", "0.2", "--seed", "7")
    np.testing.assert_array_equal(again, held[: len(again)])
    other = temperatures(100, *thermostat, "--friction", "0.2", "--seed", "8")
    assert not np.array_equal(other, held[: len(other)])
    error = _run_cpp(runner, path, tmp_path / "start.xyz", "--md", "2", *thermostat)
    assert "Langevin MD needs both --temperature K >= 0 and --friction" in error


def test_the_cpp_runner_names_the_file_frame_and_atom_of_bad_input(
    mace_paired_float64, runner, tmp_path
):
    _, path, _ = mace_paired_float64
    frame = "3\n\nC 0 0 0\nO 1.2 0 0\n{}\n"
    cases = {
        frame.format("H -1 0 0") + frame.format("Fe -1 0 0"): "frame 1, atom 2: element Fe, "
        "which the model does not know (its species: ",
        frame.format("H -1 0 0") + frame.format("H 1.0 oops 0"): "frame 1, atom 2: "
        "'H 1.0 oops 0' is not `element x y z`",
        frame.format("H -1 0 0").replace("3", "4", 1): "frame 0: 3 of its 4 atom lines",
        '3\nLattice="1 0 0 0 1 0"\n': 'frame 0: Lattice="1 0 0 0 1 0" is not 9 numbers',
        "3\nstep=2.5\n": "frame 0: step=2.5 is not a step number",
    }
    for text, message in cases.items():
        (tmp_path / "bad.xyz").write_text(text)
        error = _run_cpp(runner, path, tmp_path / "bad.xyz")
        assert isinstance(error, str) and f"bad.xyz: {message}" in error, error
    error = _run_cpp(runner, tmp_path / "missing.pt2", tmp_path / "bad.xyz")
    assert "missing.pt2: not a readable AOTInductor package" in error, error
    short = "3\nProperties=species:S:1:pos:R:3:momenta:R:3\nC 0 0 0 0 0 0\nO 1.2 0 0 0 0 0\n"
    md_cases = [  # (start file, options after --md 2, message)
        (
            short + "H -1 0 0 0.1\n",
            ("--timestep", "1"),
            "start.xyz: frame 0, atom 2: 'H -1 0 0 0.1' has no momenta in its columns 4-6",
        ),
        (short + "H -1 0 0 0.1\n", (), "--md STEPS needs --timestep FS > 0"),
        (
            "2\nProperties=species:S:1:pos:R:3:tags:I:x:momenta:R:3\nC 0 0 0 1 0 0 0\n"
            "O 1.2 0 0 1 0 0 0\n",
            ("--timestep", "1"),
            "frame 0: Properties=species:S:1:pos:R:3:tags:I:x:momenta:R:3 is not",
        ),
    ]
    for text, options, message in md_cases:
        (tmp_path / "start.xyz").write_text(text)
        error = _run_cpp(runner, path, tmp_path / "start.xyz", "--md", "2", *options)
        assert isinstance(error, str) and message in error, error


def test_evaluate_scores_a_package_as_its_model(mace_fast_float64, tmp_path, capsys):
    """``equiforce evaluate model.pt2 data.xyz``: the package (float64: exact) gives the
    model file's error table, stress included, one structure per call; --precision refused."""
    from ase import Atoms
    from ase.io import write

    from equiforce.testing.structures import emt_labelled

    model, path, _ = mace_fast_float64
    frames = [make_molecule("CH4", seed=2), make_fcc_cu(repeat=1, seed=1)]
    frames += [make_triclinic_cu(seed=4), make_fcc_cu(repeat=2, seed=3)]
    write(tmp_path / "data.xyz", [emt_labelled(a) for a in frames], format="extxyz")
    model_file = str(save_model(model, tmp_path / "model.pt"))
    reports = {}
    for name, source in (("model", model_file), ("package", str(path))):
        argv = ["evaluate", source, str(tmp_path / "data.xyz"), "--batch-size", "3"]
        assert main([*argv, "--json", str(tmp_path / f"{name}.json")]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert sorted(reports["package"]) == ["energy", "energy_per_atom", "forces", "stress"]
    for quantity, metrics in reports["model"].items():
        for statistic, value in metrics.items():
            got = reports["package"][quantity][statistic]
            want = value if isinstance(value, str) else pytest.approx(value, rel=1e-9, abs=1e-9)
            assert got == want, (quantity, statistic)
    capsys.readouterr()
    assert main(["evaluate", str(path), str(tmp_path / "data.xyz"), "--precision", "float32"]) == 2
    assert "a package runs as exported" in capsys.readouterr().err
    lone = emt_labelled(Atoms("Cu", cell=[10.0] * 3, pbc=True))  # an isolated-atom frame
    write(tmp_path / "lone.xyz", [emt_labelled(a) for a in frames] + [lone], format="extxyz")
    assert main(["evaluate", str(path), str(tmp_path / "lone.xyz")]) == 2
    assert "structure 4: exported packages need >= 2 atoms" in capsys.readouterr().err
