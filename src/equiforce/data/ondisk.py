"""A preprocessed on-disk dataset: NumPy ``.npy`` shards read lazily, with bounded memory.

``preprocess`` streams extxyz files (frames read in chunks, never a whole file), builds every
neighbour list once and writes shards of ``shard_size`` structures. Each shard is a folder of
plain ``.npy`` arrays, one concatenated array per field, plus per-structure offsets::

    OUT/manifest.json            format, species, r_max, key spec, counts, config types,
                                 statistics, sources
    OUT/shard_00000/pos.npy       (n_atoms_total, 3) float64, Å
                   numbers.npy   (n_atoms_total,) int64 atomic numbers
                   forces.npy    (n_atoms_total, 3) float64, eV/Å (zeros where unlabelled)
                   edge_index.npy (n_edges_total, 2) int32, per-structure atom indices
                   edge_shift.npy (n_edges_total, 3) int32 lattice shifts
                   atom_offset.npy / edge_offset.npy (n_structures + 1,) int64
                   cell.npy (n, 3, 3), pbc.npy (n, 3), energy.npy (n,), stress.npy (n, 3, 3),
                   weights.npy (n, 3) energy/forces/stress weights, has.npy (n, 3) bool masks,
                   config_type.npy (n,) int32 index into the manifest's ``config_types``,
                   state.npy (n, 2) float64 total charge (e) and spin multiplicity
                   (a directory preprocessed before it reads as neutral singlets: fine
                   for a model that reads no state, refused for one that does,
                   ``check_label_keys``)

Why ``.npy`` arrays rather than HDF5 (mace-torch) or LMDB (fairchem): no extra dependency and
no pickles; one structure is a contiguous byte range of each array, read with ``os.preadv``
(a memory map would keep every page an epoch touched in the resident set: measured in
docs/training.md); the OS page cache is shared between loader workers and ranks on a node; a
shard is a folder of files that maps onto ranks/workers. The manifest holds each file's size
and CRC-32: a process checks both when it first opens a shard (one sequential read of it), so
a shard truncated or changed since it was written (a partial copy, bit rot) is refused by name
instead of training on its bytes; ``verify_preprocessed`` checks a whole directory.
``atom_type`` is not stored: it is looked up from the atomic numbers at read time, so a dataset
can be moved onto another species order (``retype``) without rewriting it.

``OnDiskDataset`` returns the same graph dicts as ``GraphDataset`` (equal tensors, dtypes and
shapes), so ``collate``, ``make_loader``, ``rank_batches`` and the trainer work unchanged.
Its files are opened lazily in each process (never pickled), so forked or spawned loader
workers and ranks each open them themselves and read only the structures they index.
"""

from __future__ import annotations

import dataclasses
import json
import os
import weakref
import zlib
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from equiforce.data import keys
from equiforce.data.dataset import file_sha256
from equiforce.data.extxyz import DEFAULT_KEYS, DataError, KeySpec, configuration_from_atoms
from equiforce.data.graph import Configuration, type_indices
from equiforce.data.statistics_stream import StatisticsAccumulator
from equiforce.files import atomic_write_text

FORMAT = "equiforce-ondisk"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_N_Z = 119  # atomic numbers 0..118 (the species lookup table)
# Shards whose files a process keeps open at once (14 descriptors each); more are closed least
# recently used first and reopened when read again (headers are parsed once per process).
MAX_OPEN_SHARDS = 32

# field -> (dtype, trailing shape, scope): "atom" arrays are indexed by atom_offset, "edge"
# arrays by edge_offset, "graph" arrays by structure; every array has its rows along axis 0.
SHARD_FIELDS: Mapping[str, tuple[str, tuple[int, ...], str]] = {
    "pos": ("float64", (3,), "atom"),
    "numbers": ("int64", (), "atom"),
    "forces": ("float64", (3,), "atom"),
    "edge_index": ("int32", (2,), "edge"),
    "edge_shift": ("int32", (3,), "edge"),
    "cell": ("float64", (3, 3), "graph"),
    "pbc": ("bool", (3,), "graph"),
    "energy": ("float64", (), "graph"),
    "stress": ("float64", (3, 3), "graph"),
    "weights": ("float64", (3,), "graph"),
    "has": ("bool", (3,), "graph"),
    "config_type": ("int32", (), "graph"),
    "state": ("float64", (2,), "graph"),
    "atom_offset": ("int64", (), "offset"),
    "edge_offset": ("int64", (), "offset"),
}
# fields a directory preprocessed by an earlier equiforce lacks (read as unknown)
OPTIONAL_FIELDS = frozenset({"config_type", "state"})
_DEFAULT_STATE = tuple(keys.GRAPH_STATE_DEFAULTS[name] for name in keys.GRAPH_STATE_KEYS)


class OnDiskError(DataError):
    """A preprocessed directory that cannot be used; the message names the file."""


def is_preprocessed(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a preprocessed-dataset manifest."""
    return (Path(path) / MANIFEST).is_file()


# --- writing ------------------------------------------------------------------------------


def iter_configurations(
    path: str | os.PathLike, keys_spec: KeySpec = DEFAULT_KEYS, require_label: bool = True
) -> Iterator[Configuration]:
    """Validated configurations of an extxyz file, one frame at a time (partial labels allowed).

    Args:
        path: the extxyz file.
        keys_spec: label key names.
        require_label: refuse a frame with none of energy, forces and stress (training data:
            each frame must teach something); False yields it (evaluation leaves it out).

    Raises:
        DataError: a frame that cannot be parsed, is invalid or (``require_label``) carries no
            label (file, frame and field named).
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    frames = ase.io.iread(str(path), index=":", format="extxyz")
    count = 0
    while True:
        source = f"{path}, frame {count}"
        try:
            atoms = next(frames)
        except StopIteration:
            break
        except Exception as exc:  # ASE raises many types
            raise DataError(f"{source}: cannot parse extended XYZ: {exc}") from exc
        config = configuration_from_atoms(atoms, keys_spec, source)
        unlabelled = config.energy is None and config.forces is None and config.stress is None
        if require_label and unlabelled:
            raise DataError(f"{source}: no label: none of energy, forces and stress is present")
        yield config
        count += 1
    if count == 0:
        raise DataError(f"{path}: no frames (empty file?)")


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last may be shorter), pulled lazily."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _structure_arrays(config: Configuration, r_max: float) -> dict[str, np.ndarray]:
    """One structure's arrays (the graph of ``configuration_to_graph``, without atom types)."""
    from equiforce.data.neighbors import neighbor_list

    edge_index, edge_shift = neighbor_list(config.positions, config.cell, config.pbc, r_max)
    n = config.n_atoms
    return {
        "pos": config.positions,
        "numbers": np.asarray(config.atomic_numbers, dtype=np.int64),
        "forces": np.zeros((n, 3)) if config.forces is None else config.forces,
        "edge_index": edge_index.T.astype(np.int32),
        "edge_shift": np.rint(edge_shift).astype(np.int32),
        "cell": config.cell.reshape(1, 3, 3),
        "pbc": np.asarray(config.pbc, dtype=bool).reshape(1, 3),
        "energy": np.array([0.0 if config.energy is None else config.energy]),
        "stress": (np.zeros((3, 3)) if config.stress is None else config.stress).reshape(1, 3, 3),
        "weights": config.weight
        * np.array([[config.energy_weight, config.forces_weight, config.stress_weight]]),
        "has": np.array(
            [[config.energy is not None, config.forces is not None, config.stress is not None]]
        ),
        "config_type": config.config_type,  # a name; ``preprocess`` turns it into an index
        "state": np.array([[config.total_charge, config.total_spin]]),
    }


def _chunk_arrays(args: tuple[list[Configuration], float]) -> list[dict[str, np.ndarray]]:
    configs, r_max = args
    return [_structure_arrays(c, r_max) for c in configs]


class _ShardWriter:
    """Collects structures and writes a shard folder every ``shard_size`` structures."""

    def __init__(self, out_dir: Path, shard_size: int):
        self.out_dir, self.shard_size = out_dir, shard_size
        self.pending: list[dict[str, np.ndarray]] = []
        self.shards: list[dict[str, Any]] = []

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        self.pending.append(arrays)
        if len(self.pending) == self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"shard_{len(self.shards):05d}"
        folder = self.out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        items, self.pending = self.pending, []
        n_atoms = np.array([len(a["numbers"]) for a in items])
        n_edges = np.array([len(a["edge_index"]) for a in items])
        joined = {
            "atom_offset": np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64),
            "edge_offset": np.concatenate([[0], np.cumsum(n_edges)]).astype(np.int64),
        }
        for field, (dtype, _, _) in SHARD_FIELDS.items():
            if field in joined:
                continue
            joined[field] = np.concatenate([a[field] for a in items]).astype(dtype)
        sizes, checksums = {}, {}
        for field, array in joined.items():
            target = folder / f"{field}.npy"
            np.save(target, array)
            sizes[field] = target.stat().st_size
            checksums[field] = file_crc32(target)
        self.shards.append(
            {
                "name": name,
                "n_structures": len(items),
                "n_atoms": int(n_atoms.sum()),
                "n_edges": int(n_edges.sum()),
                "bytes": sizes,
                "crc32": checksums,
            }
        )


def preprocess(
    xyz_paths: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    type_names: Sequence[str] | None,
    r_max: float,
    key_spec: KeySpec = DEFAULT_KEYS,
    workers: int = 1,
    *,
    shard_size: int = 10_000,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Stream extxyz files into a preprocessed directory (neighbour lists, labels, statistics).

    Frames are read ``chunk_size`` at a time; neighbour lists of a chunk are built in one of
    ``workers`` processes; shards of ``shard_size`` structures are written as they fill, so
    memory is bounded by a shard, not by the data.

    Args:
        xyz_paths: one or more extxyz files (joined in order).
        out_dir: output folder (created; must not hold a manifest already).
        type_names: species order of the manifest; None: the species present, sorted by
            atomic number. An element outside a given list raises naming the frame.
        r_max: neighbour cutoff, Å.
        key_spec: label key names.
        workers: processes building neighbour lists (1: in this process).
        shard_size: structures per shard.
        chunk_size: frames read and handed to a worker at a time.

    Returns:
        The manifest (also written to ``out_dir/manifest.json`` last, atomically).
    """
    from ase.data import chemical_symbols

    single = isinstance(xyz_paths, (str, os.PathLike))
    paths = [Path(xyz_paths)] if single else [Path(p) for p in xyz_paths]
    out = Path(out_dir)
    if is_preprocessed(out):
        raise OnDiskError(f"{out / MANIFEST}: already a preprocessed dataset; remove it first")
    if not r_max > 0:
        raise ValueError(f"r_max must be positive, got {r_max}")
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, shard_size)
    accumulator = StatisticsAccumulator()
    config_types: dict[str, int] = {}  # name -> index, in order of first appearance
    sources: list[dict[str, Any]] = []
    pool = get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        for path in paths:
            configs = iter_configurations(path, key_spec)
            chunks = ((chunk, float(r_max)) for chunk in chunked(configs, chunk_size))
            mapped = pool.imap(_chunk_arrays, chunks) if pool else map(_chunk_arrays, chunks)
            first = accumulator.n_configs
            for chunk in mapped:
                for arrays in chunk:
                    has = arrays["has"][0]
                    accumulator.add(
                        arrays["numbers"],
                        len(arrays["edge_index"]),
                        float(arrays["energy"][0]) if has[0] else None,
                        arrays["forces"] if has[1] else None,
                    )
                    if type_names is not None:  # refuse early, naming the frame
                        source = f"{path}, frame {accumulator.n_configs - 1 - first}"
                        type_indices(arrays["numbers"], type_names, source)
                    kind = config_types.setdefault(arrays["config_type"], len(config_types))
                    writer.add({**arrays, "config_type": np.array([kind])})
            sources.append(
                {
                    "path": str(path),
                    "sha256": file_sha256(path),
                    "first": first,
                    "n_structures": accumulator.n_configs - first,
                }
            )
        writer.flush()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    present = [chemical_symbols[z] for z in np.flatnonzero(accumulator.present)]
    names = list(type_names) if type_names is not None else present
    statistics = accumulator.statistics(names)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "type_names": names,
        "r_max": float(r_max),
        "keys": key_spec.label_keys(),
        "n_structures": accumulator.n_configs,
        "n_atoms": accumulator.n_atoms,
        "n_edges": accumulator.n_edges,
        "config_type_key": key_spec.config_type_key,
        "config_types": list(config_types),
        "shards": writer.shards,
        "sources": sources,
        "statistics": dataclasses.asdict(statistics),
        "accumulator": accumulator.to_json(),
    }
    atomic_write_text(json.dumps(manifest, indent=1), out / MANIFEST)
    return manifest


# --- reading ------------------------------------------------------------------------------

STATE_LABEL_KEYS = ("total_charge_key", "total_spin_key")  # KeySpec fields of the state


def check_label_keys(
    dataset: "OnDiskDataset", key_spec: KeySpec, reads_state: bool, remedy: str
) -> None:
    """Refuse a directory preprocessed with other label keys than ``key_spec``'s.

    A directory preprocessed before the electronic state was stored (its manifest's keys
    lack ``STATE_LABEL_KEYS``, its shards ``state.npy``) reads every frame as a neutral
    singlet: it matches any state keys for a model that reads no state, and is refused for
    one that does (its frames' charges were never read).

    Args:
        dataset: the opened directory.
        key_spec: the label keys the reader asks for.
        reads_state: the model conditions on the total charge and spin (``graph_inputs``).
        remedy: the end of the message: what the user can do (e.g. "give its keys").

    Raises:
        ValueError: the keys differ, or a state-reading model meets a directory without
            states (the directory named).
    """
    stored, wanted = dataset.manifest["keys"], key_spec.label_keys()
    if not all(name in stored for name in STATE_LABEL_KEYS):
        if reads_state:
            raise ValueError(
                f"{dataset.path}: preprocessed before equiforce stored each frame's charge and "
                "spin, and this model reads them: run equiforce preprocess on it again"
            )
        wanted = {k: v for k, v in wanted.items() if k not in STATE_LABEL_KEYS}
    if stored != wanted:
        raise ValueError(
            f"{dataset.path}: preprocessed with label keys {stored}, read with {wanted}: {remedy}"
        )


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a preprocessed directory, checked for format and version.

    Raises:
        OnDiskError: naming the manifest file when it is missing, unreadable or of another
            format or version.
    """
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise OnDiskError(f"{file}: no manifest; not a preprocessed dataset (equiforce preprocess)")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise OnDiskError(f"{file}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnDiskError(f"{file}: not an {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise OnDiskError(
            f"{file}: format version {manifest.get('version')}, this equiforce reads "
            f"{FORMAT_VERSION}; preprocess the data again"
        )
    return manifest


def file_crc32(file: Path) -> int:
    """CRC-32 (zlib's) of a file's bytes, read in 4 MiB blocks."""
    checksum = 0
    with open(file, "rb") as handle:
        while block := handle.read(1 << 22):
            checksum = zlib.crc32(block, checksum)
    return checksum


def _check_file(file: Path, size: int | None, crc32: int | None) -> None:
    """Raise naming ``file`` when it is missing, or its size or CRC-32 is not the manifest's
    (a manifest written before checksums has no ``crc32``: size only)."""
    try:
        found = file.stat().st_size
    except OSError as exc:
        raise OnDiskError(f"{file}: missing shard file ({exc})") from exc
    if found != size:
        raise OnDiskError(
            f"{file}: {found} bytes, the manifest says {size}: truncated or "
            "corrupt shard; preprocess the data again"
        )
    if crc32 is not None and (checksum := file_crc32(file)) != crc32:
        raise OnDiskError(
            f"{file}: CRC-32 {checksum:08x}, the manifest says {crc32:08x}: the shard's bytes "
            "changed since it was written (corrupt or partial copy); preprocess the data again"
        )


def verify_preprocessed(path: str | os.PathLike) -> list[str]:
    """Check every shard file of a preprocessed directory against its manifest (size and
    CRC-32: one read of the whole directory).

    Returns:
        One message per missing, truncated or changed file, naming it (empty: all intact).

    Raises:
        OnDiskError: the manifest itself is missing or unreadable.
    """
    manifest, problems = read_manifest(path), []
    for info in manifest["shards"]:
        for field, size in info["bytes"].items():
            try:
                _check_file(Path(path) / info["name"] / f"{field}.npy", size, _crc32(info, field))
            except OnDiskError as exc:
                problems.append(str(exc))
    return problems


def _crc32(info: Mapping[str, Any], field: str) -> int | None:
    """The manifest's CRC-32 of a shard's field file (None: written before checksums)."""
    return info.get("crc32", {}).get(field)


class _FileArray:
    """Rows of one ``.npy`` file, read on demand with ``os.pread`` into fresh arrays.

    Nothing is mapped, so only the copies count in the process's resident set (the file's
    pages stay in the shared page cache); ``array[k]`` and ``array[a:b]`` index along axis 0.

    Raises:
        OnDiskError: naming the file, when its header is unreadable, its dtype or shape is
            not ``dtype``/``shape``, or it is shorter than its header says (truncated).
    """

    def __init__(self, file: Path, dtype: str, shape: tuple[int, ...], offset: int | None):
        self.file, self.dtype, self.shape = file, np.dtype(dtype), shape
        self.row_bytes = self.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        try:
            self.fd = os.open(file, os.O_RDONLY)
        except OSError as exc:
            raise OnDiskError(f"{file}: missing shard file ({exc})") from exc
        self._closer = weakref.finalize(self, os.close, self.fd)
        self.offset = self._check_header() if offset is None else offset
        size = os.fstat(self.fd).st_size
        if size < self.offset + shape[0] * self.row_bytes:
            self.close()
            raise OnDiskError(
                f"{file}: {size} bytes, its header needs {self.offset + shape[0] * self.row_bytes}:"
                " truncated or corrupt shard; preprocess the data again"
            )

    def _check_header(self) -> int:
        """The data offset, after checking the header's dtype and shape."""
        from numpy.lib import format as npy

        file, dtype, shape = self.file, self.dtype, self.shape
        try:
            with open(file, "rb") as handle:
                version = npy.read_magic(handle)
                header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
                found_shape, fortran, found_dtype = header[version](handle)
                offset = handle.tell()
        except (OSError, ValueError, KeyError) as exc:
            self.close()
            raise OnDiskError(f"{file}: corrupt shard file: {exc}") from exc
        if found_dtype != dtype or tuple(found_shape) != shape or fortran:
            self.close()
            raise OnDiskError(
                f"{file}: {found_dtype} {tuple(found_shape)}, expected {dtype} {shape}: "
                "corrupt shard; preprocess the data again"
            )
        return offset

    def close(self) -> None:
        self._closer()

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            start, stop = int(key.start), int(key.stop)
        else:
            start, stop = int(key), int(key) + 1
        buffer = bytearray((stop - start) * self.row_bytes)
        read = os.preadv(self.fd, [buffer], self.offset + start * self.row_bytes)
        if read != len(buffer):
            raise OnDiskError(f"{self.file}: short read (file changed?); preprocess again")
        rows = np.frombuffer(buffer, dtype=self.dtype).reshape(stop - start, *self.shape[1:])
        return rows if isinstance(key, slice) else rows[0]


class OnDiskDataset(Dataset):
    """Graphs of a preprocessed directory, read lazily from the shards' ``.npy`` files.

    Args:
        path: the directory ``preprocess`` wrote.
        type_names: species order of ``atom_type``; None: the manifest's.
        indices: structures of this view (global indices, any order); None: all.
        dataset_index: the training file's position in ``data.train_files``, stored in every
            graph as ``dataset_index`` (per-file metrics); None: no such field.
        weight: the file's weight, multiplying the graphs' ``energy_weight``,
            ``forces_weight`` and ``stress_weight`` when read (as ``data.mixing.tag``).

    ``dataset[k]`` is the graph dict ``configuration_to_graph`` builds for structure
    ``indices[k]`` (equal tensors). Shard files are checked by size and CRC-32 when first
    opened in a process; a truncated or corrupt shard raises ``OnDiskError`` naming the file.
    Reads are positioned reads of one structure's byte ranges (no memory map: the pages an
    epoch reads do not pile up in the process's resident set; they stay in the shared page
    cache).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        type_names: Sequence[str] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        dataset_index: int | None = None,
        weight: float = 1.0,
    ):
        self.path = Path(path)
        self.dataset_index = dataset_index
        self.weight = float(weight)
        self.manifest = read_manifest(self.path)
        self.r_max = float(self.manifest["r_max"])
        self.type_names = tuple(type_names or self.manifest["type_names"])
        counts = [s["n_structures"] for s in self.manifest["shards"]]
        self._shard_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(self._shard_start[-1])
        if total != self.manifest["n_structures"]:
            raise OnDiskError(
                f"{self.path / MANIFEST}: shards hold {total} structures, manifest says "
                f"{self.manifest['n_structures']}"
            )
        self.indices = np.arange(total) if indices is None else np.asarray(indices, np.int64)
        self._lookup = self._type_lookup(self.type_names)
        self._open: dict[int, dict[str, _FileArray]] = {}
        self._offsets: dict[int, dict[str, int]] = {}  # checked headers: data offsets

    def _type_lookup(self, type_names: Sequence[str]) -> np.ndarray:
        from ase.data import atomic_numbers

        present = self.manifest["type_names"]
        lookup = np.full(_N_Z, -1, dtype=np.int64)
        for index, name in enumerate(type_names):
            lookup[atomic_numbers[name]] = index
        unknown = [name for name in present if lookup[atomic_numbers[name]] < 0]
        if unknown:
            raise ValueError(f"{self.path}: species {unknown} are not in {list(type_names)}")
        return lookup

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"], state["_offsets"] = {}, {}  # each process opens the files itself
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def _shard(self, k: int) -> dict[str, _FileArray]:
        arrays = self._open.pop(k, None)  # re-inserted last: least recently used first
        if arrays is None:
            if len(self._open) >= MAX_OPEN_SHARDS:
                for array in self._open.pop(next(iter(self._open))).values():
                    array.close()
            arrays = self._open_shard(k)
            self._offsets[k] = {field: array.offset for field, array in arrays.items()}
        self._open[k] = arrays
        return arrays

    def _open_shard(self, k: int) -> dict[str, _FileArray]:
        info = self.manifest["shards"][k]
        folder = self.path / info["name"]
        n = info["n_structures"]
        arrays = {}
        for field, (dtype, tail, scope) in SHARD_FIELDS.items():
            if field in OPTIONAL_FIELDS and field not in info["bytes"]:
                continue
            file = folder / f"{field}.npy"
            if k not in self._offsets:  # first open in this process
                _check_file(file, info["bytes"].get(field), _crc32(info, field))
            rows = {
                "atom": info["n_atoms"],
                "edge": info["n_edges"],
                "graph": n,
                "offset": n + 1,
            }[scope]
            offset = self._offsets.get(k, {}).get(field)
            arrays[field] = _FileArray(file, dtype, (rows, *tail), offset)
        return arrays

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, row in the shard) of view item ``index``."""
        structure = int(self.indices[index])
        shard = int(np.searchsorted(self._shard_start, structure, side="right")) - 1
        return shard, structure - int(self._shard_start[shard])

    def source(self, index: int) -> str:
        """Where view item ``index`` came from: ``"<file>, frame k"``."""
        structure = int(self.indices[index])
        for entry in self.manifest["sources"]:
            if entry["first"] <= structure < entry["first"] + entry["n_structures"]:
                return f"{entry['path']}, frame {structure - entry['first']}"
        return f"{self.path}, structure {structure}"

    def config_type(self, index: int) -> str | None:
        """The config type of view item ``index`` (``Configuration.config_type``), or None
        where the directory was preprocessed before config types were kept."""
        names = self.manifest.get("config_types")
        if names is None:
            return None
        shard, row = self.locate(index)
        return names[int(self._shard(shard)["config_type"][row])]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard, row = self.locate(index)
        a = self._shard(shard)
        a0, a1 = int(a["atom_offset"][row]), int(a["atom_offset"][row + 1])
        e0, e1 = int(a["edge_offset"][row]), int(a["edge_offset"][row + 1])
        f64 = torch.float64
        numbers = np.array(a["numbers"][a0:a1])
        weights = np.array(a["weights"][row])
        state = np.array(a["state"][row]) if "state" in a else _DEFAULT_STATE
        has = np.array(a["has"][row])

        def graph_field(name: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.array(a[name][row : row + 1]), dtype=dtype)

        graph = {
            keys.POSITIONS: torch.from_numpy(np.array(a["pos"][a0:a1])),
            keys.ATOMIC_NUMBERS: torch.from_numpy(numbers),
            keys.ATOM_TYPE: torch.from_numpy(self._lookup[numbers]),
            keys.FORCES: torch.from_numpy(np.array(a["forces"][a0:a1])),
            keys.EDGE_INDEX: torch.from_numpy(a["edge_index"][e0:e1].T.astype(np.int64, order="C")),
            keys.EDGE_SHIFT: torch.from_numpy(a["edge_shift"][e0:e1].astype(np.float64)),
            keys.CELL: graph_field("cell", f64),
            keys.PBC: graph_field("pbc", torch.bool),
            keys.ENERGY: graph_field("energy", f64),
            keys.STRESS: graph_field("stress", f64),
            keys.N_ATOMS: torch.tensor([a1 - a0], dtype=torch.long),
            keys.ENERGY_WEIGHT: torch.tensor([weights[0]], dtype=f64),
            keys.FORCES_WEIGHT: torch.tensor([weights[1]], dtype=f64),
            keys.STRESS_WEIGHT: torch.tensor([weights[2]], dtype=f64),
            keys.HAS_ENERGY: torch.tensor([bool(has[0])]),
            keys.HAS_FORCES: torch.tensor([bool(has[1])]),
            keys.HAS_STRESS: torch.tensor([bool(has[2])]),
            keys.TOTAL_CHARGE: torch.tensor([state[0]], dtype=f64),
            keys.TOTAL_SPIN: torch.tensor([state[1]], dtype=f64),
        }
        return self._tagged(graph)

    def _tagged(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``graph`` with this view's file index and weight (``data.mixing.tag``'s fields)."""
        if self.dataset_index is not None:
            graph[keys.DATASET_INDEX] = torch.tensor([self.dataset_index], dtype=torch.long)
        if self.weight != 1.0:
            for name in (keys.ENERGY_WEIGHT, keys.FORCES_WEIGHT, keys.STRESS_WEIGHT):
                graph[name] = graph[name] * self.weight
        return graph

    def subset(self, indices: Sequence[int]) -> "OnDiskDataset":
        """A view of the items at ``indices`` (nothing read or copied)."""
        picked = self.indices[np.asarray(indices, dtype=np.int64)]
        return OnDiskDataset(self.path, self.type_names, picked, self.dataset_index, self.weight)

    def retype(self, type_names: Sequence[str]) -> "OnDiskDataset":
        """The same view with ``atom_type`` indexing ``type_names``."""
        return OnDiskDataset(self.path, type_names, self.indices, self.dataset_index, self.weight)

    def tag(self, index: int, weight: float) -> "OnDiskDataset":
        """The same view with graphs tagged by file ``index`` and scaled by ``weight``
        (``data.mixing.tag`` for a directory: applied when read, nothing rewritten)."""
        return OnDiskDataset(self.path, self.type_names, self.indices, int(index), weight)

    @property
    def species(self) -> tuple[str, ...]:
        """Chemical symbols in the whole directory, sorted by atomic number."""
        from ase.data import atomic_numbers

        return tuple(sorted(self.manifest["type_names"], key=atomic_numbers.get))

    def accumulate(self) -> StatisticsAccumulator:
        """Streaming statistics sums of this view (the manifest's when it is the whole set).

        ``accumulate().statistics(type_names, isolated_atoms)`` equals ``compute_statistics``
        on the same graphs; reading streams the per-atom fields, one structure at a time.
        """
        total = int(self._shard_start[-1])
        if len(self.indices) == total and np.array_equal(self.indices, np.arange(total)):
            accumulator = StatisticsAccumulator.from_json(self.manifest["accumulator"])
        else:
            accumulator = StatisticsAccumulator()
            for index in range(len(self)):
                shard, row = self.locate(index)
                a = self._shard(shard)
                a0, a1 = int(a["atom_offset"][row]), int(a["atom_offset"][row + 1])
                has = a["has"][row]
                accumulator.add(
                    np.asarray(a["numbers"][a0:a1]),
                    int(a["edge_offset"][row + 1] - a["edge_offset"][row]),
                    float(a["energy"][row]) if has[0] else None,
                    np.asarray(a["forces"][a0:a1]) if has[1] else None,
                )
        return accumulator
