"""Writing an exported potential: trace, ``torch.export``, AOTInductor, validate, package.

``export_potential`` turns an eager ``Potential`` into a ``.pt2`` package that
``equiforce.export.package.load_exported`` (torch, numpy, vesin and ase only) and C++
AOTInductor loaders run:

1. the potential is copied onto the target device and kernel backend, and
   ``kernels.export_ops.exportable`` readies the ``fast`` MACE executors: on CPU in float32
   or float64 they call the operators of the kernel library (``kernels.extension.
   kernel_ops``; the symmetric contraction's weights folded into its basis once), elsewhere
   plain-torch formulations (the edge convolution on sparse Clebsch–Gordan triples, the
   symmetric contraction as one product over the used monomials);
2. ``models.compile.trace_potential`` traces one whole energy → forces (→ stress) call
   (derivatives included) with symbolic atom and edge axes, on the periodic validation cell;
   a MACE program without per-edge outputs also takes the edges' bonds
   (``nn.edge_pairs.PAIR_INPUTS``, a symbolic pair axis; ``load_exported``'s call finds them),
   so its radial MLPs run once per bond, not once per edge;
3. the weights become buffers of the graph (so they are packaged), the outputs are cut to the
   requested ones, and ``torch.export.export`` exports it with the atom and edge axes dynamic
   (from 2 up; the atom axis up to ``max_atoms`` when given, the edge axis unbounded: its
   count depends on the density and r_max, not on the atoms alone);
4. ``torch._inductor.aot_compile`` compiles it for ``cpu_target`` (``-march``: ``native``, or
   e.g. ``x86-64-v3`` for other CPUs, ``_cpu_target``), its CPU loops for ``threads`` OpenMP threads
   (default 1, serial, whatever the exporting process's torch threads: Inductor would
   otherwise compile for ``torch.get_num_threads()``, and its parallel loops write the
   forces' scatter-adds as atomic adds, 2.1-4.6x slower at 2 threads, docs/export.md); the
   candidate package is loaded and compared
   with the eager potential (an inference call, ``create_graph=False``, as the calculator
   makes it: a tiny bf16-mixed Allegro's package is within 1e-6-2.5e-2 eV/Å of it, but
   2.7-7.6e-2 eV/Å from eager with ``create_graph=True``, whose SiLU derivative rounds
   differently) on a molecule, a
   periodic triclinic cell, a slab (mixed pbc) and a periodic cell larger than the traced
   one (``validation_structures``); beyond the dtype's ``EXPORT_TOLERANCES`` nothing is
   written (``ExportValidationError`` with the figures);
5. the package is written atomically with the metadata and figures in it, and with the
   kernel library when the program calls it.

A program calling the kernel library (MACE's operators; Allegro's tensor product with the
``fast`` backend) carries the library (``equiforce_kernels/<namespace>.so`` in the archive,
described by ``metadata["kernel_library"]``: namespace, file, sha256, operators), and
``load_exported`` loads it before the program; any other custom operator in the trace is
refused (``ExportError``). The library is compiled for the same ``cpu_target``.
``metadata["cpu"]`` names the instruction-set extensions the compiled code may use; loaders
refuse a package on a CPU without one of them (it would die of an illegal instruction).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from torch.export import Dim
from torch.export.pt2_archive._package import PT2ArchiveWriter, _package_aoti_files

import equiforce
from equiforce.cpu_features import compiled_features, cpu_flag_set
from equiforce.data import keys
from equiforce.data.charge_spin import embedded_integers
from equiforce.export.package import (
    FORMAT,
    KERNEL_LIBRARY_DIR,
    METADATA_FILE,
    ExportedPotential,
    atoms_batch,
    load_exported,
)
from equiforce.files import atomic_write
from equiforce.kernels import use_backend
from equiforce.kernels.export_ops import exportable
from equiforce.kernels.extension import OpLibrary, kernel_ops, target_kernel_ops
from equiforce.models.compile import _SYMBOLIC_AXIS, trace_potential
from equiforce.models.potential import Potential, select_inputs
from equiforce.nn.edge_pairs import PAIR_FIRST, PAIR_INPUTS, PAIR_OF_EDGE, pair_inputs
from equiforce.precision import current_policy

__all__ = [
    "EXPORT_TOLERANCES",
    "ExportError",
    "ExportValidationError",
    "export_potential",
    "format_validation",
    "validation_structures",
]

# (atol, rtol) of package vs eager by the lowest compute dtype of the model: elementwise
# |package - eager| <= atol + rtol * |eager| for energy (eV), forces (eV/Å), stress, virial and
# node energies. float64/float32 equal equiforce.testing's TOL.fp64/TOL.fp32; bf16/fp16 allow
# a few roundings of an 8/11-bit mantissa where Inductor fuses differently.
EXPORT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-10),
    "float32": (1e-4, 1e-4),
    "bf16": (2e-2, 2e-2),
    "fp16": (2e-2, 2e-2),
}
_GRID_SPACING = 2.0  # Å between generated atoms (~0.125 atoms/Å^3, a condensed-phase density)


class ExportError(ValueError):
    """The potential cannot be exported as asked (e.g. custom ops in the trace)."""


class ExportValidationError(ExportError):
    """The compiled package disagrees with the eager potential; ``figures`` holds the check."""

    def __init__(self, message: str, figures: list[dict[str, Any]]):
        super().__init__(message)
        self.figures = figures


def _grid_atoms(type_names, shape, pbc, seed: int) -> Atoms:
    """Atoms on a jittered grid (``_GRID_SPACING``), species cycled in random order."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    positions = grid.reshape(-1, 3) * _GRID_SPACING
    positions = positions + rng.normal(scale=0.1, size=positions.shape)
    numbers = [atomic_numbers[type_names[k % len(type_names)]] for k in range(len(positions))]
    cell = np.diag(np.asarray(shape, dtype=float) * _GRID_SPACING)
    cell[1, 0], cell[2, 1] = 0.3, -0.2  # triclinic
    return Atoms(numbers=rng.permutation(numbers), positions=positions, cell=cell, pbc=pbc)


def validation_structures(
    type_names: list[str] | tuple[str, ...], potential: Potential | None = None
) -> dict[str, Atoms]:
    """The export and conversion checks' structures, covering every species (fixed seeds).

    Args:
        type_names: the model's species.
        potential: the model, where its per-structure state matters: a model conditioned on
            the charge and spin (``graph_inputs``) also gets the molecule as a cation and an
            anion doublet, those of them its tables embed.

    Returns:
        ``molecule`` (12 atoms, no cell), ``periodic`` (8 atoms, triclinic, the traced one),
        ``slab`` (18 atoms, pbc x and y) and ``large`` (64 atoms, periodic), all neutral
        singlets; then ``molecule, charge +1, doublet`` and ``molecule, charge -1, doublet``.
    """
    structures = {
        "molecule": _grid_atoms(type_names, (3, 2, 2), False, seed=0),
        "periodic": _grid_atoms(type_names, (2, 2, 2), True, seed=1),
        "slab": _grid_atoms(type_names, (3, 3, 2), (True, True, False), seed=2),
        "large": _grid_atoms(type_names, (4, 4, 4), True, seed=3),
    }
    if potential is None or not potential.energy_model.graph_inputs:
        return structures
    for charge in (1, -1):
        ion = structures["molecule"].copy()
        ion.info.update(charge=charge, spin=2)
        try:
            batch = atoms_batch(ion, type_names, potential.r_max, torch.device("cpu"))
            potential.energy_model.check_graph_inputs(batch)
        except ValueError:  # its table has no such charge
            continue
        structures[f"molecule, charge {charge:+d}, doublet"] = ion
    return structures


def _check_max_atoms(max_atoms: int | None, structures: dict[str, Atoms]) -> None:
    """Raise ``ExportError`` unless every validation structure fits in ``max_atoms``."""
    if max_atoms is None:
        return
    name, largest = max(structures.items(), key=lambda item: len(item[1]))
    if max_atoms < len(largest):
        raise ExportError(
            f"--max-atoms {max_atoms} is below the export check's largest structure "
            f"({name!r}, {len(largest)} atoms), so the package could not be validated; "
            f"use --max-atoms >= {len(largest)}"
        )


def _lowest_compute_dtype(potential: Potential) -> str:
    """``EXPORT_TOLERANCES`` key: the policy's autocast dtype, else the parameter dtype."""
    policy = current_policy(potential)
    if policy is not None and policy.autocast != "none":
        return policy.autocast
    return str(potential.dtype).removeprefix("torch.")


def _freeze(graph: torch.fx.GraphModule, n_inputs: int, state, picks: list[int]) -> None:
    """Turn the trailing placeholders into buffers (``state``), keep outputs ``picks``."""
    placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
    for index, (node, tensor) in enumerate(zip(placeholders[n_inputs:], state, strict=True)):
        graph.register_buffer(f"_weight_{index}", tensor)
        with graph.graph.inserting_before(node):
            node.replace_all_uses_with(graph.graph.get_attr(f"_weight_{index}"))
        graph.graph.erase_node(node)
    output = next(node for node in graph.graph.nodes if node.op == "output")
    output.args = (tuple(output.args[0][k] for k in picks),)
    graph.graph._codegen = torch.fx.graph.CodeGen()  # plain positional inputs, tuple out
    graph.graph.eliminate_dead_code()
    graph.recompile()


def _custom_ops(graph: torch.fx.GraphModule) -> list[torch._ops.OpOverload]:
    """The non-aten/prims operators in ``graph``, sorted by name."""
    ops = {
        node.target
        for node in graph.graph.nodes
        if isinstance(node.target, torch._ops.OpOverload)
        and node.target.namespace not in ("aten", "prims")
    }
    return sorted(ops, key=lambda op: op.name())


def _kernel_library(graph: torch.fx.GraphModule, march: str) -> OpLibrary | None:
    """The operator library the traced ``graph`` calls, compiled for ``-march=<march>``
    (``kernels.extension.target_kernel_ops``), or None when it calls aten's only.

    The trace calls this CPU's build (``kernel_ops()``); for another target the graph's
    operators are pointed at the target's build (the same operators in its own namespace).
    The only operators a package may call besides aten's are those of the library, which the
    package carries; any other is refused.

    Raises:
        ExportError: an operator from elsewhere; the library does not build for ``march``.
    """
    custom = _custom_ops(graph)
    if not custom:
        return None
    native = kernel_ops()
    foreign = [op.name() for op in custom if native is None or op.namespace != native.namespace]
    if foreign:
        raise ExportError(
            f"the trace calls custom ops {foreign}, which a package cannot carry (only "
            "equiforce's kernel library travels with it); export with --backend reference"
        )
    library = target_kernel_ops(march)
    if library is None:
        raise ExportError(
            f"the kernel library does not compile for --cpu-target {march} (the log says why); "
            "export with --backend reference, or for another target"
        )
    if library.namespace != native.namespace:
        for node in graph.graph.nodes:
            if node.target in custom:
                _fake_as(f"{library.namespace}::{node.target._opname}", node.target)
                packet = getattr(library.ops, node.target._opname)
                node.target = getattr(packet, node.target._overloadname)
        graph.recompile()
    return library


@functools.cache
def _fake_as(qualname: str, native: torch._ops.OpOverload) -> None:
    """Give operator ``qualname`` (``native``'s operator in another build of the library)
    ``native``'s fake (meta) formula, which export and Inductor trace with."""
    torch.library.register_fake(qualname, lambda *args, **kwargs: native(*args, **kwargs))


def _library_metadata(graph: torch.fx.GraphModule, library: OpLibrary) -> dict[str, Any]:
    """``metadata["kernel_library"]`` of a package whose ``graph`` calls ``library``."""
    data = library.path.read_bytes()
    return {
        "namespace": library.namespace,
        "file": f"{KERNEL_LIBRARY_DIR}/{library.namespace}.so",
        "sha256": hashlib.sha256(data).hexdigest(),
        "operators": [op.name() for op in _custom_ops(graph)],
        "bytes": len(data),
    }


def _cpu_target(march: str, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inductor's options for ``--cpu-target march`` and ``metadata["cpu"]``: the machine
    type, the target and the instruction-set extensions the program's compiled code may use
    (``cpu_features.compiled_features`` of Inductor's compile: ``-march`` and its vector ISA's
    flags), which loaders check (``_library_features`` adds the kernel library's).

    ``native`` compiles for this CPU (Inductor's default; ``_required`` keeps the features
    this CPU's /proc/cpuinfo lists); another
    ``-march`` value (e.g. ``x86-64-v3``: AVX2 CPUs since 2013-2015) also picks Inductor's
    widest vector ISA within the target (``cpp.simdlen``: its vector flags are added to
    ``-march``). The validation runs the package here, so this CPU must have the target's
    extensions.

    Raises:
        ExportError: a target other than ``native`` off x86-64 or for a CUDA package, or one
            the compiler refuses.
    """
    from torch._inductor import config as inductor_config
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    options: dict[str, Any] = {}
    compiler = get_cpp_compiler()
    if march != "native":
        if platform.machine() not in ("x86_64", "AMD64") or device.type != "cpu":
            raise ExportError(
                f"--cpu-target {march}: only CPU packages on x86-64 take a target other than native"
            )
        try:
            target = compiled_features(march, compiler)
        except ValueError as err:
            raise ExportError(f"--cpu-target {march}: {err}") from err
        wide = {"avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"}.issubset(target)
        simdlen = 512 if wide else 256 if {"avx2", "fma", "f16c"}.issubset(target) else 1
        options = {"cpp.march": march, "cpp.simdlen": simdlen}
    with inductor_config.patch(options):
        isa_flags = pick_vec_isa().build_arch_flags().split()
    features = _required(march, compiled_features(march, compiler, isa_flags))
    return options, {"machine": platform.machine(), "target": march, "features": features}


def _required(march: str, features: list[str]) -> list[str]:
    """``features`` as a package for ``march`` asks them of a CPU, sorted: for ``native`` only
    those this CPU's /proc/cpuinfo lists (the compiler reads cpuid, which also names what the
    operating system does not enable, e.g. AMX under a kernel without its state; the package
    must load where it was exported and validated)."""
    present = cpu_flag_set()
    if march != "native" or present is None:
        return sorted(set(features))
    return sorted(set(features) & present)


def _library_features(cpu: dict[str, Any]) -> dict[str, Any]:
    """``metadata["cpu"]`` with the extensions the kernel library's compile (its own
    compiler, ``-march=<target>``) may use added."""
    from torch.utils.cpp_extension import get_cxx_compiler

    library = compiled_features(cpu["target"], get_cxx_compiler())
    return {**cpu, "features": _required(cpu["target"], [*cpu["features"], *library])}


def _exported_program(
    potential: Potential,
    batch: dict[str, torch.Tensor],
    outputs: list[str],
    stress: bool,
    max_atoms: int | None,
    march: str,
) -> tuple[torch.export.ExportedProgram, list[str], OpLibrary | None, dict[str, Any] | None]:
    """Steps 2-3 of the module docstring; returns the program, its input keys, the kernel
    library it calls (compiled for ``-march=<march>``, ``_kernel_library``) and its
    ``metadata["kernel_library"]``."""
    selected = select_inputs(potential.energy_model, batch)
    names = sorted([*selected, *(name for name in PAIR_INPUTS if name in batch)])
    state = [t.detach() for t in (*potential.parameters(), *potential.buffers())]
    args = [batch[name] for name in names]
    edge_gradients = keys.EDGE_GRADIENT in outputs
    graph, out_keys = trace_potential(potential, names, args + state, True, stress, edge_gradients)
    library = _kernel_library(graph, march)
    missing = sorted(set(outputs) - set(out_keys))
    if missing:
        raise ExportError(f"the potential does not produce {missing}")
    _freeze(graph, len(names), state, [out_keys.index(name) for name in outputs])
    atoms, edges = Dim("n_atoms", min=2, max=max_atoms), Dim("n_edges", min=2)
    per_axis = {keys.EDGE_INDEX: edges, keys.EDGE_SHIFT: edges, PAIR_OF_EDGE: edges}
    per_axis[PAIR_FIRST] = Dim("n_pairs", min=1)
    dynamic = tuple(
        {_SYMBOLIC_AXIS[name]: per_axis.get(name, atoms)} if name in _SYMBOLIC_AXIS else None
        for name in names
    )
    program = torch.export.export(graph, tuple(args), dynamic_shapes=dynamic)
    described = None if library is None else _library_metadata(graph, library)
    return program, names, library, described


def _validate(
    package: ExportedPotential, potential: Potential, tolerance: tuple[float, float]
) -> tuple[list[dict[str, Any]], bool]:
    """Package vs eager on ``validation_structures``: figures per structure, all within?"""
    atol, rtol = tolerance
    stress = keys.STRESS in package.outputs
    figures, passed = [], True
    for name, atoms in validation_structures(package.type_names, potential).items():
        batch = package.batch(atoms)
        got = package(batch, compute_stress=stress)
        want = potential(
            batch,
            compute_forces=True,
            compute_stress=stress,
            create_graph=False,
            compute_edge_gradients=keys.EDGE_GRADIENT in package.outputs,
        )
        deviation, within = {}, True
        for key in package.outputs:
            diff = (got[key] - want[key].detach()).abs()
            deviation[key] = float(diff.max())
            within &= bool((diff <= atol + rtol * want[key].detach().abs()).all())
        figures.append(
            {
                "structure": name,
                "n_atoms": len(atoms),
                "n_edges": int(batch[keys.EDGE_INDEX].shape[1]),
                "pbc": [bool(p) for p in atoms.pbc],
                "max_abs_deviation": deviation,
                "within_tolerance": within,
            }
        )
        passed &= within
    return figures, passed


def _metadata(
    potential: Potential,
    outputs: list[str],
    inputs: list[str],
    device: torch.device,
    max_atoms: int | None,
    backend: str,
    threads: int,
) -> dict[str, Any]:
    policy = current_policy(potential)
    return {
        "format": FORMAT,
        "family": potential.family,
        # LAMMPS runs a package in C++ only for strictly local models (csrc/aoti_model.cpp)
        "strictly_local": bool(potential.energy_model.strictly_local),
        "message_passing_layers": int(potential.energy_model.message_passing_layers),
        "type_names": list(potential.type_names),
        # ASE's standard atomic weights: what a C++ MD loop integrates with (equiforce-run --md)
        "type_masses": [
            float(atomic_masses[atomic_numbers[name]]) for name in potential.type_names
        ],
        "r_max": float(potential.r_max),
        "units": {
            "energy": "eV",
            "length": "Å",
            "forces": "eV/Å",
            "stress": "eV/Å^3",
            "mass": "amu",
        },
        "dtype": str(potential.dtype).removeprefix("torch."),
        "precision": None if policy is None else dataclasses.asdict(policy),
        "inputs": inputs,
        "outputs": outputs,
        "device": device.type,
        "backend": backend,
        "max_atoms": max_atoms,
        "threads": threads,
        "equiforce_version": equiforce.__version__,
        "torch_version": torch.__version__,
        "spec": json.loads(json.dumps(potential.spec_dict(), default=str)),
        # the per-structure state the program takes, and the integers each categorical one
        # embeds (null: any number), flat for the C++ runner: equiforce-run --charge/--spin
        **{f"{name}_range": None for name in potential.energy_model.graph_inputs},
        **{
            f"{name}_range": list(span)
            for name, span in embedded_integers(
                getattr(potential.spec, "embedding_specs", None) or {}
            ).items()
        },
    }


def export_potential(
    potential: Potential,
    path: str | os.PathLike,
    *,
    backend: str = "fast",
    device: str | torch.device = "cpu",
    stress: bool = False,
    per_atom: bool = False,
    max_atoms: int | None = None,
    threads: int = 1,
    cpu_target: str = "native",
) -> dict[str, Any]:
    """Export ``potential`` into an AOTInductor package at ``path`` (module docstring).

    Args:
        potential: the eager potential in the precision to export (not modified).
        path: destination ``.pt2`` file, written atomically and only after validation.
        backend: kernel backend to trace (``reference``: plain torch ops; ``fast``: the fast
            executors, calling the kernel library's operators).
        device: ``cpu`` or ``cuda``: the package runs on this device type only.
        stress: also output ``stress`` and ``virial`` (1, 3, 3) float64 eV/Å^3 and eV.
        per_atom: also output ``node_energy`` (n_atoms,) float64 eV and ``edge_gradient``
            (n_edges, 3) float64 eV/Å, ``dE/dr_ij`` per edge (per-atom virials; the LAMMPS
            pair style needs both).
        max_atoms: the most atoms per structure the package takes (the upper bound of the
            exported atom axis, stored as ``metadata["max_atoms"]``; loading refuses larger
            structures); at least the largest validation structure (64). None: unbounded.
        threads: OpenMP threads the CPU loops are compiled for (``metadata["threads"]``;
            step 4 of the module docstring: 1, serial, is the fast choice measured here).
        cpu_target: the CPUs the package's compiled code is for, a ``-march`` value:
            ``native`` (this CPU's every extension), or e.g. ``x86-64-v3`` (any AVX2 CPU) or
            ``x86-64-v4`` (AVX-512) for a cluster whose nodes differ from this one
            (``_cpu_target``; ``metadata["cpu"]``, checked by the loaders).

    Returns:
        The metadata written into the package (``validation``: the figures).

    Raises:
        ExportError: custom ops other than the kernel library's in the trace; ``max_atoms``
            below the validation structures; ``threads`` below 1; a ``cpu_target`` the
            compiler refuses (or not ``native`` off x86-64 or for CUDA).
        ExportValidationError: the package disagrees with eager beyond ``EXPORT_TOLERANCES``
            of the model's lowest compute dtype; nothing is written.
    """
    device = torch.device(device)
    if threads < 1:
        raise ExportError(f"threads must be >= 1, got {threads}")
    _check_max_atoms(max_atoms, validation_structures(potential.type_names))
    target_options, cpu = _cpu_target(cpu_target, device)
    model = use_backend(copy.deepcopy(potential), backend).to(device).eval()
    model = exportable(model)  # fast MACE kernels as plain torch ops, weights folded
    outputs = [keys.ENERGY, keys.FORCES]
    outputs += [keys.STRESS, keys.VIRIAL] if stress else []
    outputs += [keys.NODE_ENERGY, keys.EDGE_GRADIENT] if per_atom else []
    periodic = validation_structures(model.type_names)["periodic"]
    traced = atoms_batch(periodic, model.type_names, model.r_max, device)
    if model.energy_model.uses_edge_pairs and not per_atom:
        traced.update(pair_inputs(traced))  # MACE's radial MLPs once per bond (step 2)
    program, inputs, library, described = _exported_program(
        model, traced, outputs, stress, max_atoms, cpu_target
    )
    metadata = _metadata(model, outputs, inputs, device, max_atoms, backend, threads)
    metadata["kernel_library"] = described
    metadata["cpu"] = cpu if library is None else _library_features(cpu)
    aoti_files = torch._inductor.aot_compile(
        program.module(check_guards=False),
        program.example_inputs[0],
        options={
            **target_options,
            "cpp.threads": threads,
            "aot_inductor.package": True,
            "aot_inductor.metadata": _string_metadata(metadata),
        },
    )
    compute = _lowest_compute_dtype(model)
    with tempfile.TemporaryDirectory(prefix="equiforce-export-") as scratch:
        candidate = Path(scratch) / "candidate.pt2"
        candidate.write_bytes(_package_bytes(aoti_files, metadata, library))
        package = load_exported(candidate, device)
        figures, passed = _validate(package, model, EXPORT_TOLERANCES[compute])
    metadata["validation"] = {"tolerance": list(EXPORT_TOLERANCES[compute]), "figures": figures}
    if not passed:
        raise ExportValidationError(
            f"the compiled package disagrees with the eager model beyond the {compute} tolerance "
            f"(atol, rtol) = {EXPORT_TOLERANCES[compute]}; nothing written:\n"
            + format_validation(figures),
            figures,
        )
    content = _package_bytes(aoti_files, metadata, library)
    atomic_write(path, lambda handle: handle.write(content))
    return metadata


def _package_bytes(aoti_files: list, metadata: dict[str, Any], library: OpLibrary | None) -> bytes:
    """The PT2 archive: AOTInductor's files, the metadata as ``extra/equiforce.json`` (read
    by ``read_metadata``) and, when the program calls it, the kernel library as
    ``metadata["kernel_library"]["file"]``."""
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        _package_aoti_files(writer, aoti_files)
        writer.write_string(f"extra/{METADATA_FILE}", json.dumps(metadata, indent=1))
        described = metadata["kernel_library"]
        if library is not None:
            data = library.path.read_bytes()
            if hashlib.sha256(data).hexdigest() != described["sha256"]:
                raise ExportError(f"{library.path} changed while exporting")
            writer.write_bytes(described["file"], data)
    return buffer.getvalue()


def _string_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """AOTInductor metadata (string values, for C++ loaders): ``equiforce.<key>`` -> JSON."""
    return {f"equiforce.{key}": json.dumps(value) for key, value in metadata.items()}


def format_validation(figures: list[dict[str, Any]]) -> str:
    """One line per validation structure: sizes, max |package - eager| per output."""
    lines = []
    for row in figures:
        deviations = ", ".join(f"{k} {v:.2e}" for k, v in row["max_abs_deviation"].items())
        status = "ok" if row["within_tolerance"] else "FAILS"
        lines.append(
            f"  {row['structure']:<9} {row['n_atoms']:>4} atoms {row['n_edges']:>6} edges  "
            f"{deviations}  {status}"
        )
    return "\n".join(lines)
