"""Shared helpers for the data tests: small extxyz files written into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

# The benchmark data sit beside the repository (``<repo>/../shared/data``) when available.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def write_text(tmp_path):
    """Write ``text`` to ``tmp_path / name`` and return the path."""

    def _write(text: str, name: str = "frames.xyz") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def write_frames(tmp_path):
    """Write ``ase.Atoms`` frames as extxyz to ``tmp_path / name`` and return the path."""
    import ase.io

    def _write(frames, name: str = "frames.xyz") -> Path:
        path = tmp_path / name
        ase.io.write(path, list(frames), format="extxyz")
        return path

    return _write
