"""``data.cache_dir``: extxyz files preprocessed on first use into the on-disk format.

The first run that reads ``data.xyz`` with ``data.cache_dir: DIR`` streams it into
``DIR/data.<key>/`` with ``equiforce.data.ondisk.preprocess`` (the directory ``equiforce
preprocess`` writes); later runs open that directory, read lazily with bounded memory, as if
``data.train_file`` named it. The key hashes the file's bytes, the cutoff, the label keys and
the format version, so an edited file or another ``r_max`` gets a directory of its own and a
stale one is never read. Ranks and runs that ask at once wait on a lock beside the directory
while one of them builds it (``equiforce.files.build_once``); a build that was killed leaves
only its scratch folder, which the next build removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from equiforce.data.dataset import file_sha256
from equiforce.data.extxyz import KeySpec
from equiforce.data.ondisk import FORMAT, FORMAT_VERSION, preprocess
from equiforce.files import build_once

LOG = logging.getLogger(__name__)


def cache_key(path: str | os.PathLike, r_max: float, key_spec: KeySpec) -> str:
    """64 hex digits naming the preprocessed form of ``path`` (its bytes, not its name).

    Args:
        path: extxyz file.
        r_max: neighbour cutoff, Å.
        key_spec: label key names.
    """
    settings = {
        "format": [FORMAT, FORMAT_VERSION],
        "file_sha256": file_sha256(path),
        "r_max": float(r_max),
        "keys": key_spec.label_keys(),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cached_preprocessed(
    path: str | os.PathLike, cache_dir: str | os.PathLike, r_max: float, key_spec: KeySpec
) -> Path:
    """The preprocessed directory of ``path`` in ``cache_dir``, built on the first call.

    Args:
        path: extxyz file (frames may carry partial labels; a bad frame raises naming the
            file, frame and field, and leaves no directory).
        cache_dir: the cache folder (created if needed).
        r_max: neighbour cutoff, Å.
        key_spec: label key names.

    Returns:
        ``cache_dir/<stem>.<24 hex digits of cache_key>``: a directory ``OnDiskDataset``
        reads, species in the file's order by atomic number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    target = Path(cache_dir) / f"{path.stem}.{cache_key(path, r_max, key_spec)[:24]}"

    def build(target: Path) -> None:
        scratch = target.with_name(target.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)  # a killed build's leftovers
        LOG.info("preprocessing %s into %s (first use of data.cache_dir)", path, target)
        preprocess(path, scratch, None, r_max, key_spec)
        os.rename(scratch, target)

    return build_once(target, build)
