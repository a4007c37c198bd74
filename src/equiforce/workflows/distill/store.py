"""On-disk cache of per-structure teacher results, written incrementally and atomically.

A ``RecordStore`` is a folder of ``chunk-<hash>.npz`` files. Each chunk holds the records of
a few structures: ``keys`` (structure hashes) and, per field, the records' arrays concatenated
along axis 0 with their row counts in ``<field>__rows``. Chunks are written with
``equiforce.files.atomic_write`` (temporary file + rename), so a killed process leaves only
complete chunks, and the records it had finished survive. The folder name carries the
teacher's fingerprint and the settings of the records (``store_dir``), so a different teacher
or setting never reads stale results, and every student of the same teacher shares them.

Under several ranks (``fill_store(world=...)``) each rank computes its share of the missing
structures and writes its own chunks; after a barrier every rank reads the others' chunks
(``RecordStore.refresh``), so all hold the same records.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from equiforce.files import atomic_write
from equiforce.train.distributed import World

Record = dict[str, np.ndarray]


def structure_key(atoms) -> str:
    """SHA-256 (hex) of a structure's atomic numbers, positions, cell and pbc (exact bytes)."""
    digest = hashlib.sha256()
    for array, dtype in (
        (atoms.numbers, np.int64),
        (atoms.positions, np.float64),
        (atoms.cell.array, np.float64),
        (atoms.pbc, np.bool_),
    ):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.hexdigest()


def store_dir(root: str | Path, kind: str, fingerprint: str, settings: Mapping[str, Any]) -> Path:
    """Folder of one store: ``root/<kind>-<hash of fingerprint and settings>``."""
    text = repr((fingerprint, sorted(settings.items())))
    return Path(root) / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


class RecordStore:
    """Records (``field -> array``) keyed by structure hash, persisted as chunks.

    Args:
        directory: the store's folder (created on the first write); existing chunks are read.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.records: dict[str, Record] = {}
        self._chunks_read: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Read the chunks written since this store last looked (by other processes)."""
        for chunk in sorted(self.directory.glob("chunk-*.npz")):
            if chunk.name not in self._chunks_read:
                self._read_chunk(chunk)
                self._chunks_read.add(chunk.name)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> Record:
        return self.records[key]

    def _read_chunk(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            keys = [str(k) for k in data["keys"]]
            fields = [name for name in data.files if name != "keys" and "__" not in name]
            for name in fields:
                rows = data[f"{name}__rows"]
                starts = np.concatenate([[0], np.cumsum(rows)])
                values = data[name]
                for n, key in enumerate(keys):
                    self.records.setdefault(key, {})[name] = values[starts[n] : starts[n + 1]]

    def add(self, keys: Sequence[str], records: Sequence[Record]) -> Path:
        """Write ``records`` as one chunk (atomically) and keep them in memory.

        Args:
            keys: structure hashes.
            records: one mapping per key; all records share the same fields.

        Returns:
            The chunk file.
        """
        fields = sorted(records[0])
        arrays: dict[str, np.ndarray] = {"keys": np.asarray(list(keys))}
        for name in fields:
            parts = [np.asarray(r[name]) for r in records]
            arrays[name] = np.concatenate(parts, axis=0)
            arrays[f"{name}__rows"] = np.asarray([len(p) for p in parts], dtype=np.int64)
        digest = hashlib.sha256("".join(keys).encode()).hexdigest()[:20]
        path = atomic_write(
            self.directory / f"chunk-{digest}.npz", lambda handle: np.savez(handle, **arrays)
        )
        for key, record in zip(keys, records, strict=True):
            self.records[key] = {name: np.asarray(record[name]) for name in fields}
        self._chunks_read.add(path.name)
        return path


def fill_store(
    store: RecordStore,
    structures: Sequence[Any],
    compute: Callable[[Sequence[Any]], list[Record]],
    save_every: int,
    description: str,
    progress: bool = True,
    world: World | None = None,
) -> int:
    """Compute the records of the structures missing from ``store``, saving as it goes.

    Args:
        store: the cache.
        structures: ASE ``Atoms``; duplicates (same hash) are computed once.
        compute: ``structures -> records`` (the teacher call).
        save_every: structures per chunk write.
        description: progress-bar label.
        progress: show a tqdm bar (cached structures count as done).
        world: the ranks (None: one). Every rank must call with the same structures and a
            store read before this call; rank r computes the missing structures r, r + size,
            ... and, after the others have finished theirs, reads their chunks.

    Returns:
        The number of structures this rank computed (0 when everything was cached).

    Raises:
        RankFailure: another rank died or took longer than the timeout for its share.
    """
    world = World() if world is None else world
    world.barrier(f"{description}: before labelling")  # every rank has read the store
    missing: dict[str, Any] = {}
    for atoms in structures:
        key = structure_key(atoms)
        if key not in store and key not in missing:
            missing[key] = atoms
    total = len({structure_key(a) for a in structures})
    todo = list(missing.items())[world.rank :: world.size]
    with tqdm(
        total=total,
        initial=total - len(todo),
        desc=description,
        unit="structure",
        disable=not progress,
    ) as bar:
        for start in range(0, len(todo), save_every):
            chunk = todo[start : start + save_every]
            records = compute([atoms for _, atoms in chunk])
            store.add([key for key, _ in chunk], records)
            bar.update(len(chunk))
    if world.distributed:
        world.barrier(f"{description}: waiting for the other ranks' shares")
        store.refresh()
    return len(todo)
