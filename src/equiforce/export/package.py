"""Loading an exported potential (a ``.pt2`` AOTInductor package) without the model code.

A package written by ``equiforce.export.build.export_potential`` holds the compiled
energy → forces (→ stress) program with its weights (an AOTInductor shared library) and, as
``extra/equiforce.json`` in the archive, its metadata: species, r_max, units, precision,
outputs, input order, device, equiforce/torch versions and the export-time validation figures
(the same fields, as strings, are in the AOTInductor metadata that C++ loaders read with
``AOTIModelPackageLoader::get_metadata()``; see docs/export.md).

This module needs torch, numpy, vesin and ase only: it imports ``equiforce.data`` (neighbour
list and batching) and nothing of ``equiforce.models`` or ``equiforce.train``
(``tests/export/test_export.py`` checks ``sys.modules`` in a fresh process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from equiforce.cpu_features import missing_features
from equiforce.data import keys
from equiforce.data.charge_spin import check_state
from equiforce.data.graph import atoms_to_configuration, model_inputs
from equiforce.files import atomic_write
from equiforce.nn.edge_pairs import PAIR_FIRST, pair_inputs
from equiforce.op_library import load_op_library, loaded_op_library

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "ExportedPackageError",
    "ExportedPotential",
    "atoms_batch",
    "load_exported",
    "read_metadata",
]

FORMAT = "equiforce-aoti-1"  # metadata["format"] of packages this module reads
METADATA_FILE = "equiforce.json"  # in the archive's extra/ folder (PT2 archive extra files)
# <archive>/equiforce_kernels/<namespace>.so: the operators a package calls (not under extra/,
# which torch's loader reads as text)
KERNEL_LIBRARY_DIR = "equiforce_kernels"
_MIN_ATOMS = _MIN_EDGES = 2  # the exported atom/edge axes are dynamic from 2 up


def atoms_batch(
    atoms: Any, type_names: list[str], r_max: float, device: torch.device
) -> dict[str, torch.Tensor]:
    """The model inputs of one ``ase.Atoms`` (neighbour list within ``r_max`` Å), on
    ``device`` (``data.graph.model_inputs``: ``keys.MODEL_INPUT_KEYS``).

    Raises:
        ValueError: an element not in ``type_names`` (named, with the model's species).
    """
    source = f"Atoms({atoms.get_chemical_formula()})"
    config = atoms_to_configuration(atoms, source=source)
    return {
        name: value.to(device) for name, value in model_inputs(config, type_names, r_max).items()
    }


class ExportedPackageError(ValueError):
    """A package that cannot be used here: corrupted, foreign, incompatible or misapplied."""


def _torch_release(version: str) -> tuple[str, ...]:
    """``"2.13.0+cpu"`` -> ``("2", "13")``: AOTInductor packages are tied to a torch release."""
    return tuple(version.split("+")[0].split(".")[:2])


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a package, read without loading its compiled code.

    The whole archive is checked against its CRCs first, so a truncated or corrupted file is
    reported here rather than crashing the loader.

    Args:
        path: the ``.pt2`` file.

    Returns:
        The metadata dict (see the module docstring; ``validation`` holds the figures).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ExportedPackageError: not a readable zip archive, a damaged member, or no equiforce
            metadata in it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exported package {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = archive.namelist()
            member = next((n for n in names if n.endswith(f"/extra/{METADATA_FILE}")), None)
            text = None if member is None else archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ExportedPackageError(
            f"{path}: not a readable .pt2 package (truncated or corrupted?): {err}"
        ) from err
    if damaged is not None:
        raise ExportedPackageError(f"{path}: corrupted package, member {damaged} fails its CRC")
    if text is None:
        raise ExportedPackageError(
            f"{path}: no extra/{METADATA_FILE} in the archive; not written by equiforce export"
        )
    metadata = json.loads(text)
    if metadata.get("format") != FORMAT:
        raise ExportedPackageError(
            f"{path}: package format {metadata.get('format')!r}, this equiforce reads {FORMAT!r}"
        )
    return metadata


def _check_compatible(path: Path, metadata: dict[str, Any], device: torch.device) -> None:
    """Raise ``ExportedPackageError`` for another torch release, an unusable device or a CPU
    that cannot run the compiled code (``_check_cpu``)."""
    built = metadata["torch_version"]
    if _torch_release(built) != _torch_release(torch.__version__):
        raise ExportedPackageError(
            f"{path}: exported with torch {built}, this is torch {torch.__version__}; "
            "AOTInductor packages run only under the torch release that compiled them "
            "(re-export the model file with this torch)"
        )
    if device.type != metadata["device"]:
        raise ExportedPackageError(
            f"{path}: compiled for device {metadata['device']!r}, asked to run on "
            f"{device.type!r}; export again with --device {device.type}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExportedPackageError(f"{path}: compiled for CUDA, but CUDA is not available here")
    _check_cpu(path, metadata.get("cpu"))


def _check_cpu(path: Path, cpu: dict[str, Any] | None) -> None:
    """Raise ``ExportedPackageError`` where this CPU lacks an instruction-set extension the
    package's compiled code may use (``metadata["cpu"]``, ``equiforce.cpu_features``): its
    first call would stop the process with an illegal instruction. Packages from before the
    field, and CPUs whose flags cannot be read, are not checked."""
    if cpu is None:
        return
    if cpu["machine"] != platform.machine():
        raise ExportedPackageError(
            f"{path}: compiled for {cpu['machine']} CPUs, this is {platform.machine()}; export "
            "the model file again on this machine"
        )
    missing = missing_features(cpu["features"])
    if missing:
        raise ExportedPackageError(
            f"{path}: compiled for CPUs with {', '.join(missing)} (equiforce export "
            f"--cpu-target {cpu['target']}), which this CPU lacks: its code would stop at an "
            "illegal instruction. Export the model file again on this machine, or for every "
            "CPU of a cluster with --cpu-target x86-64-v3 (AVX2) or x86-64-v4 (AVX-512)"
        )


def load_exported(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> ExportedPotential:
    """Load a package written by ``equiforce export``.

    Args:
        path: the ``.pt2`` file.
        device: where to run; None: the device it was compiled for. A package runs only on
            the device type it was compiled for.

    Returns:
        The ``ExportedPotential``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ExportedPackageError: truncated/corrupted or foreign file, another torch release, a
            device mismatch, a CPU without an instruction-set extension the compiled code
            may use, or AOTInductor failing to load the compiled code.
    """
    path = Path(path)
    metadata = read_metadata(path)
    device = torch.device(device if device is not None else metadata["device"])
    _check_compatible(path, metadata, device)
    _load_kernel_library(path, metadata.get("kernel_library"))
    index = -1 if device.index is None else device.index
    try:
        with _cpu_isa_checked(metadata.get("cpu") is not None):
            runner = torch._inductor.aoti_load_package(str(path), device_index=index)
    except Exception as err:  # the C++ loader raises RuntimeError and friends
        raise ExportedPackageError(
            f"{path}: AOTInductor cannot load the package ({type(err).__name__}: {err})"
        ) from err
    return ExportedPotential(runner, metadata, device)


@contextlib.contextmanager
def _cpu_isa_checked(checked: bool):
    """While loading: where ``_check_cpu`` has checked the package's instruction sets
    (``checked``), drop torch's warning that its ``AOTI_CPU_ISA`` differs from this CPU's (a
    package for other CPUs, ``--cpu-target``, differs by design; the check said it runs)."""
    logger = logging.getLogger("torch.export.pt2_archive._package")

    def keep(record: logging.LogRecord) -> bool:
        return "AOTI_CPU_ISA" not in record.getMessage()

    if checked:
        logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _kernel_cache() -> Path:
    """Where carried kernel libraries are unpacked: ``$EQUIFORCE_CACHE`` or
    ``$XDG_CACHE_HOME/equiforce`` (default ``~/.cache/equiforce``), ``/kernels``."""
    root = os.environ.get("EQUIFORCE_CACHE")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "equiforce"
    return Path(root) / "kernels"


def _load_kernel_library(path: Path, library: dict[str, Any] | None) -> None:
    """Load the operator library a package carries (``metadata["kernel_library"]``) unless
    its namespace is loaded already (the same build: the namespace hashes it).

    The library is unpacked to ``_kernel_cache()/<namespace>-<sha256[:16]>.so`` (atomically;
    an existing file with the right checksum is reused; a cache that cannot be written gives
    way to a temporary folder) and loaded with ``equiforce.op_library.load_op_library``.

    Raises:
        ExportedPackageError: the library is missing from the archive, fails its checksum or
            does not load here.
    """
    if library is None or loaded_op_library(library["namespace"]) is not None:
        return
    target = _kernel_cache() / f"{library['namespace']}-{library['sha256'][:16]}.so"

    def checksum(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    if not target.exists() or checksum(target.read_bytes()) != library["sha256"]:
        with zipfile.ZipFile(path) as archive:
            member = next(
                (n for n in archive.namelist() if n.endswith(f"/{library['file']}")), None
            )
            if member is None:
                raise ExportedPackageError(
                    f"{path}: the program calls operators of {library['namespace']}, but "
                    f"{library['file']} is missing from the archive"
                )
            data = archive.read(member)
        if checksum(data) != library["sha256"]:
            raise ExportedPackageError(
                f"{path}: {library['file']} does not match its sha256 in the metadata"
            )
        try:
            atomic_write(target, lambda handle: handle.write(data))
        except OSError:  # a read-only or full cache: a private temporary folder instead
            target = Path(tempfile.mkdtemp(prefix="equiforce-kernels-")) / target.name
            target.write_bytes(data)
    try:
        load_op_library(library["namespace"], target)
    except (OSError, RuntimeError) as err:
        raise ExportedPackageError(
            f"{path}: its kernel library ({target}) does not load here "
            f"({type(err).__name__}: {err}); re-export the model file on this machine"
        ) from err


def _bond_pairs_operator(library: dict[str, Any] | None) -> Any:
    """The ``bond_pairs`` operator of the kernel library a package carries (loaded by
    ``_load_kernel_library``; libraries built since 2026-12-05 have it), else None: the
    loader then finds the bonds in torch operations."""
    if library is None:
        return None
    namespace = getattr(torch.ops, library["namespace"])
    return namespace.bond_pairs.default if hasattr(namespace, "bond_pairs") else None


class ExportedPotential:
    """A loaded package: one structure's batch in, float64 energy/forces (/stress) out.

    The call matches ``Potential.forward`` for what a package provides, so the ASE calculator
    uses either alike. Attributes: ``metadata`` (the package's dict), ``type_names``,
    ``r_max`` (Å), ``outputs`` (the output keys), ``dtype`` (parameter dtype), ``device``.

    Args:
        runner: the loaded AOTInductor model (``torch._inductor.aoti_load_package``).
        metadata: the package's metadata (``read_metadata``).
        device: the device it runs on.
    """

    def __init__(self, runner: Any, metadata: dict[str, Any], device: torch.device):
        self.runner = runner
        # The program's flat call: the runner's own __call__ parses its input and output
        # specs (JSON) and walks both pytrees on every call, a tenth of a one-molecule step;
        # the specs are checked once here instead (the inputs flat in ``inputs`` order, the
        # outputs a flat sequence in ``outputs`` order).
        in_spec, out_spec = map(pytree.treespec_loads, runner.loader.get_call_spec())
        if (in_spec.num_leaves, out_spec.num_leaves) != (
            len(metadata["inputs"]),
            len(metadata["outputs"]),
        ):
            raise ExportedPackageError(
                f"the package's program takes {in_spec.num_leaves} inputs and gives "
                f"{out_spec.num_leaves} outputs; its metadata names {len(metadata['inputs'])} "
                f"and {len(metadata['outputs'])}"
            )
        self._run = runner.loader.boxed_run
        self._bond_pairs = _bond_pairs_operator(metadata.get("kernel_library"))
        self.metadata = metadata
        self.device = device
        self.type_names: list[str] = list(metadata["type_names"])
        self.r_max = float(metadata["r_max"])
        self.outputs: list[str] = list(metadata["outputs"])
        self.inputs: list[str] = list(metadata["inputs"])
        self.dtype: torch.dtype = getattr(torch, metadata["dtype"])
        # the exported atom axis's upper bound (equiforce export --max-atoms); None: unbounded
        self.max_atoms: int | None = metadata.get("max_atoms")

    def eval(self) -> ExportedPotential:
        """``self``: a package always runs inference (for code that sets a model's mode)."""
        return self

    def batch(self, atoms: Any) -> dict[str, torch.Tensor]:
        """The batch of one ``ase.Atoms`` (neighbour list within ``r_max``), on ``device``.

        Raises:
            ValueError: an element the package's model does not know (named, with the
                model's species).
        """
        return atoms_batch(atoms, self.type_names, self.r_max, self.device)

    def __call__(
        self,
        data: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Run the package on one structure's batch.

        Args:
            data: batch of one graph (``equiforce.data.keys``; ``batch`` as produced by
                ``batch``), at least 2 atoms and 2 edges. Where the program takes the edges'
                bonds (MACE; ``inputs`` lists ``nn.edge_pairs.PAIR_INPUTS``) and ``data``
                carries none, they are found here (``nn.edge_pairs.pair_inputs``).
            compute_forces: accepted for ``Potential.forward`` compatibility; a package
                always computes forces.
            compute_stress: requires a package exported with stress.
            create_graph: must be False (the program is not differentiable).

        Returns:
            ``energy`` (1,) float64 eV, ``forces`` (n_atoms, 3) float64 eV/Å, and as exported
            ``stress``/``virial`` (1, 3, 3) float64 eV/Å^3 / eV, ``node_energy`` (n_atoms,)
            float64 eV and ``edge_gradient`` (n_edges, 3) float64 eV/Å.

        Raises:
            ValueError: stress asked of a package without it, ``create_graph``, more than one
                graph, fewer than 2 atoms or edges, or more atoms than the package's
                ``max_atoms``.
        """
        if create_graph:
            raise ValueError("an exported package is not differentiable (create_graph=True)")
        if compute_stress and keys.STRESS not in self.outputs:
            raise ValueError("this package was exported without stress (equiforce export --stress)")
        if int(data[keys.PTR].shape[0]) != 2:
            raise ValueError("an exported package evaluates one structure per call")
        n_atoms, n_edges = data[keys.POSITIONS].shape[0], data[keys.EDGE_INDEX].shape[1]
        if n_atoms < _MIN_ATOMS or n_edges < _MIN_EDGES:
            raise ValueError(
                f"exported packages need >= {_MIN_ATOMS} atoms and >= {_MIN_EDGES} edges within "
                f"r_max = {self.r_max} Å; got {n_atoms} atoms, {n_edges} edges"
            )
        if self.max_atoms is not None and n_atoms > self.max_atoms:
            raise ValueError(
                f"this package was exported with --max-atoms {self.max_atoms}; the structure "
                f"has {n_atoms} atoms (export again with a larger --max-atoms)"
            )
        if PAIR_FIRST in self.inputs and PAIR_FIRST not in data:
            data = {**data, **pair_inputs(data, self._bond_pairs)}  # the program takes them
        state_specs = self.metadata["spec"].get("embedding_specs")
        if state_specs:  # the program holds no data-dependent checks
            check_state(state_specs, data)
        inputs = [data[name].to(self.device) for name in self.inputs]
        return dict(zip(self.outputs, self._run(inputs), strict=True))
