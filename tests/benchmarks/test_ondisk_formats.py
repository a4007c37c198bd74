"""Smoke test of ``python -m benchmarks.ondisk_formats`` (skipped without h5py or lmdb)."""

from __future__ import annotations

import pytest

from benchmarks.ondisk_formats import measure

pytest.importorskip("h5py")
pytest.importorskip("lmdb")


def test_each_format_reports_a_read_time(tmp_path):
    result = measure(n=50, reads=20, repeats=1, folder=tmp_path)
    assert set(result) == {"npy_mmap_us", "npy_pread_us", "hdf5_us", "lmdb_us"}
    assert all(value > 0 for value in result.values())
