"""Random access to one structure: .npy (memory map, pread) vs HDF5 (h5py) vs LMDB (pickles).

The three layouts the field uses for preprocessed graphs, filled with the same N structures
(4 atoms, 72 edges each, the shape of ``benchmarks.preprocess_scale``'s cells):

* ``npy`` (memory map): one concatenated array per field plus offsets, opened with
  ``np.load(mmap_mode="r")``; a read slices each field.
* ``npy`` (pread): the same files, each field's byte range read with ``os.preadv`` into a
  fresh array (what ``equiforce.data.ondisk`` does: no mapped pages in the resident set).
* ``hdf5``: the same concatenated arrays as datasets of one HDF5 file (h5py), read by slicing
  (a best case for HDF5: mace-torch keeps one group per structure, which is slower to read).
* ``lmdb``: one pickled dict of arrays per structure under its index (fairchem's layout).

Each format reads ``--reads`` structures in a shuffled order (every field copied into its own
array, as a loader needs them); the figure is µs per structure, best of ``--repeats``. Needs
h5py and lmdb (both in the mace-torch peer venv, not equiforce dependencies)::

    .venv-mace/bin/python -m benchmarks.ondisk_formats
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIELDS = {  # name -> (per-structure rows, trailing shape, dtype)
    "pos": (4, (3,), np.float64),
    "numbers": (4, (), np.int64),
    "forces": (4, (3,), np.float64),
    "edge_index": (72, (2,), np.int32),
    "edge_shift": (72, (3,), np.int32),
    "energy": (1, (), np.float64),
    "cell": (1, (3, 3), np.float64),
}


def _arrays(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        name: (rng.random((n * rows, *tail)) * 10).astype(dtype)
        for name, (rows, tail, dtype) in FIELDS.items()
    }


def _timed(read, order: np.ndarray, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for k in order:
            read(int(k))
        best = min(best, time.perf_counter() - start)
    return best / len(order) * 1e6


def measure(n: int, reads: int, repeats: int, folder: Path) -> dict[str, float]:
    """µs per structure read for each format."""
    import h5py
    import lmdb

    data = _arrays(n)
    order = np.random.default_rng(1).permutation(n)[:reads]
    for name, array in data.items():
        np.save(folder / f"{name}.npy", array)
    maps = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in FIELDS}
    with h5py.File(folder / "data.h5", "w") as handle:
        for name, array in data.items():
            handle.create_dataset(name, data=array)
    env = lmdb.open(str(folder / "data.lmdb"), map_size=1 << 32, subdir=True)
    with env.begin(write=True) as txn:
        for k in range(n):
            item = {f: data[f][k * r : (k + 1) * r] for f, (r, _, _) in FIELDS.items()}
            txn.put(str(k).encode(), pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def read_npy(k: int) -> None:
        for name, (rows, _, _) in FIELDS.items():
            np.array(maps[name][k * rows : (k + 1) * rows])

    headers = {name: (np.load(folder / f"{name}.npy", mmap_mode="r").offset) for name in FIELDS}
    fds = {name: os.open(folder / f"{name}.npy", os.O_RDONLY) for name in FIELDS}

    def read_pread(k: int) -> None:
        for name, (rows, tail, dtype) in FIELDS.items():
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(tail, dtype=np.int64))
            buffer = bytearray(rows * row_bytes)
            os.preadv(fds[name], [buffer], headers[name] + k * rows * row_bytes)
            np.frombuffer(buffer, dtype=dtype)

    h5 = h5py.File(folder / "data.h5", "r")
    sets = {name: h5[name] for name in FIELDS}

    def read_h5(k: int) -> None:
        for name, (rows, _, _) in FIELDS.items():
            sets[name][k * rows : (k + 1) * rows]

    txn = env.begin()

    def read_lmdb(k: int) -> None:
        pickle.loads(txn.get(str(k).encode()))

    result = {
        "npy_mmap_us": _timed(read_npy, order, repeats),
        "npy_pread_us": _timed(read_pread, order, repeats),
        "hdf5_us": _timed(read_h5, order, repeats),
        "lmdb_us": _timed(read_lmdb, order, repeats),
    }
    h5.close()
    env.close()
    for fd in fds.values():
        os.close(fd)
    return result


def main(argv: list[str] | None = None) -> int:
    """Print and return the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="structures written")
    p.add_argument("--reads", type=int, default=5_000, help="random reads timed")
    p.add_argument("--repeats", type=int, default=3, help="best of")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args.n, args.reads, args.repeats, Path(folder))
    print(json.dumps({"settings": vars(args), **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
