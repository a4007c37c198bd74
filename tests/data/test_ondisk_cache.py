"""``data.cache_dir``: extxyz files preprocessed on disk on first use, built once, reused."""

from __future__ import annotations

import threading

import pytest

from equiforce.data import ondisk_cache
from equiforce.data.dataset import load_dataset
from equiforce.data.extxyz import DEFAULT_KEYS, DataError, KeySpec
from equiforce.data.ondisk import OnDiskDataset, is_preprocessed
from equiforce.data.ondisk_cache import cached_preprocessed
from tests.data.test_ondisk import R_MAX, _assert_same_graph, _frames


@pytest.fixture
def xyz(write_frames):
    return write_frames(_frames(9), "data.xyz")


def _count_builds(monkeypatch) -> list[int]:
    """Patch ``preprocess`` in the cache module to count its calls (slowly, to overlap)."""
    calls = []
    real = ondisk_cache.preprocess

    def counted(*args, **kwargs):
        calls.append(1)
        threading.Event().wait(0.2)  # keep the other callers waiting on the lock meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(ondisk_cache, "preprocess", counted)
    return calls


def test_training_data_comes_from_a_directory_built_on_first_use_and_reused(
    tmp_path, xyz, monkeypatch
):
    from equiforce.train.config import RunConfig
    from equiforce.train.setup import prepare_data
    from tests.train.conftest import config_dict

    builds = _count_builds(monkeypatch)
    settings = config_dict(tmp_path / "run", xyz)
    settings["data"]["cache_dir"] = str(tmp_path / "cache")
    settings["data"]["valid_file"] = str(xyz)
    reference = load_dataset(xyz, R_MAX, require_energy=False, require_forces=False)
    for _ in range(2):
        prepared = prepare_data(RunConfig.from_dict(settings))
        assert isinstance(prepared.train, OnDiskDataset)
        assert isinstance(prepared.valid, OnDiskDataset)
        for k in range(len(reference)):
            _assert_same_graph(prepared.train[k], reference[k])
    assert len(builds) == 1  # the valid file is the same file: one directory, built once
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert folder.name.startswith("data.") and prepared.train.path == folder


def test_the_key_follows_the_file_bytes_the_cutoff_and_the_label_keys(tmp_path, xyz):
    cache = tmp_path / "cache"
    first = cached_preprocessed(xyz, cache, R_MAX, DEFAULT_KEYS)
    assert cached_preprocessed(xyz, cache, R_MAX, DEFAULT_KEYS) == first
    others = {
        cached_preprocessed(xyz, cache, R_MAX + 0.5, DEFAULT_KEYS),
        cached_preprocessed(xyz, cache, R_MAX, KeySpec(weight_key="w")),
    }
    xyz.write_text(xyz.read_text().replace("energy=", "energy=1", 1))
    others.add(cached_preprocessed(xyz, cache, R_MAX, DEFAULT_KEYS))
    assert len(others | {first}) == 4
    assert OnDiskDataset(first).r_max == R_MAX and all(is_preprocessed(p) for p in others)


def test_concurrent_first_uses_build_once(tmp_path, xyz, monkeypatch):
    builds = _count_builds(monkeypatch)
    results, errors = [], []

    def use():
        try:
            results.append(cached_preprocessed(xyz, tmp_path / "cache", R_MAX, DEFAULT_KEYS))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1 and len(results) == 3
    assert len(builds) == 1


def test_a_failed_build_leaves_no_directory_and_the_next_use_builds_it(
    tmp_path, xyz, write_frames, monkeypatch
):
    real = ondisk_cache.preprocess

    def killed(paths, out, *args, **kwargs):
        (out / "shard_00000").mkdir(parents=True)  # what a killed build leaves
        (out / "shard_00000" / "stale.npy").write_bytes(b"half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(ondisk_cache, "preprocess", killed)
    with pytest.raises(KeyboardInterrupt):
        cached_preprocessed(xyz, tmp_path / "cache", R_MAX, DEFAULT_KEYS)
    (partial,) = (tmp_path / "cache").glob("data.*.partial")
    monkeypatch.setattr(ondisk_cache, "preprocess", real)
    folder = cached_preprocessed(xyz, tmp_path / "cache", R_MAX, DEFAULT_KEYS)
    assert is_preprocessed(folder) and not partial.exists()
    assert not (folder / "shard_00000" / "stale.npy").exists()

    bad = write_frames(_frames(3), "bad.xyz")
    bad.write_text(bad.read_text().replace("energy=", "energy=abc", 1))
    with pytest.raises(DataError, match="bad.xyz, frame 0"):
        cached_preprocessed(bad, tmp_path / "cache", R_MAX, DEFAULT_KEYS)
    assert not [p for p in (tmp_path / "cache").glob("bad.*") if is_preprocessed(p)]
