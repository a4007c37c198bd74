"""Fixed splits of extended XYZ files, written as byte-identical frame copies.

Benchmarks give every code the same training and validation files: the first frames of a file
train, its last frames validate, no shuffling, and each frame's text is copied unchanged (no
round trip through ASE), so that peers reading the files with their own parsers see exactly
the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

from equiforce.files import atomic_write_text

__all__ = ["fixed_split", "frame_texts", "write_frames"]


def frame_texts(path: str | os.PathLike) -> list[str]:
    """The text of every frame of an (extended) XYZ file, line endings included.

    Raises:
        ValueError: a frame's atom-count line is not an integer or the file ends inside a
            frame (the message names the file and line).
    """
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    frames, n = [], 0
    while n < len(lines):
        if not lines[n].strip():
            n += 1
            continue
        try:
            count = int(lines[n].split()[0])
        except ValueError:
            raise ValueError(f"{path}:{n + 1}: expected an atom count, got {lines[n]!r}") from None
        if n + count + 2 > len(lines):
            raise ValueError(f"{path}:{n + 1}: the file ends inside a frame of {count} atoms")
        frames.append("".join(lines[n : n + count + 2]))
        n += count + 2
    return frames


def write_frames(
    source: str | os.PathLike, destination: str | os.PathLike, selection: slice
) -> Path:
    """Copy the frames ``selection`` of ``source`` to ``destination`` (atomically).

    Raises:
        ValueError: the selection is empty.
    """
    chosen = frame_texts(source)[selection]
    if not chosen:
        raise ValueError(f"{source}: no frames in {selection}")
    return atomic_write_text("".join(chosen), destination)


def fixed_split(
    source: str | os.PathLike, directory: str | os.PathLike, n_train: int, n_valid: int
) -> tuple[Path, Path]:
    """Write the first ``n_train`` frames to ``train.xyz``, the last ``n_valid`` to ``valid.xyz``.

    Args:
        source: the labelled extxyz file.
        directory: created if missing.
        n_train, n_valid: frame counts (both >= 1).

    Returns:
        The training and validation files.

    Raises:
        ValueError: a count below 1, or the two sets would overlap.
    """
    frames = frame_texts(source)
    if n_train < 1 or n_valid < 1 or n_train + n_valid > len(frames):
        raise ValueError(
            f"{source}: cannot take the first {n_train} and last {n_valid} frames of "
            f"{len(frames)} without overlap"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train = atomic_write_text("".join(frames[:n_train]), directory / "train.xyz")
    valid = atomic_write_text("".join(frames[-n_valid:]), directory / "valid.xyz")
    return train, valid
