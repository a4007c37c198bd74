"""Atomic file writes: a reader never sees a half-written checkpoint, model, report or plot;
and ``build_once``: artefacts that concurrent processes build once and then share."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary handle on a temporary file beside ``path``, fsynced and renamed to ``path``
    when the block ends (removed, ``path`` untouched, when it raises): a file written piece
    by piece (a stream of frames) appears whole or not at all.

    Args:
        path: destination; its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync, rename it to ``path``
    (``atomic_writer``).

    Args:
        path: destination; its folder is created if needed.
        write: writes the whole content to the binary handle it is given.

    Returns:
        ``path`` as a ``Path``.
    """
    with atomic_writer(path) as handle:
        write(handle)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def build_once(target: str | os.PathLike, build: Callable[[Path], Any]) -> Path:
    """``target`` (a file or a folder), made by ``build(target)`` unless it exists.

    Processes that ask at once (the ranks of one ``mpirun`` or ``torchrun``, parallel runs,
    threads) build it once: each waits on an exclusive lock on ``<target>.lock`` beside it,
    and whoever holds the lock when ``target`` is still missing builds it. ``build`` must make
    ``target`` last and atomically (in a scratch path, then ``os.replace`` / ``os.rename``),
    so that ``target`` existing means a finished build; its exceptions propagate and leave no
    ``target``.

    Args:
        target: the artefact's path; its folder is created if needed.
        build: makes ``target``.

    Returns:
        ``target`` as a ``Path``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            build(target)
    return target
