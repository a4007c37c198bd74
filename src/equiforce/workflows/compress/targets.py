"""The system every candidate is timed on, built from the user's own structures.

* ``md-molecule``: the first training structure, as one call of an MD step;
* ``md-box``: that structure replicated into a periodic box of about ``box_atoms`` atoms: a
  periodic structure is repeated along its cell vectors; a molecule (no full periodicity) is
  copied onto a simple cubic grid whose spacing is its largest extent plus ``GAP_A``, in a
  periodic cubic cell of the grid's size (copies unrotated, so the box is deterministic);
* ``batch``: ``batch_size`` training structures (cycled) evaluated together as one batch.

The frames go to an ``.npz`` of ``equiforce.workflows.bench.systems.save_frames``, the input
of the bench's worker.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from equiforce.workflows.bench.systems import save_frames

__all__ = ["GAP_A", "target_frames", "write_target"]

GAP_A = 2.0  # distance added between neighbouring copies of a molecule in md-box, Å


def _bare(atoms: Atoms) -> Atoms:
    return Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def _box(structure: Atoms, box_atoms: int) -> Atoms:
    per_side = max(1, math.ceil(round((box_atoms / len(structure)) ** (1.0 / 3.0), 9)))
    if structure.pbc.all():
        return structure.repeat((per_side,) * 3)
    centred = structure.positions - structure.positions.mean(axis=0)
    spacing = float(np.ptp(centred, axis=0).max()) + GAP_A
    box = Atoms(cell=np.eye(3) * spacing * per_side, pbc=True)
    for site in np.ndindex(per_side, per_side, per_side):
        offset = (np.asarray(site, dtype=float) + 0.5) * spacing
        box += Atoms(structure.numbers, positions=centred + offset)
    return box


def target_frames(
    target: str, structures: Sequence[Atoms], box_atoms: int = 500, batch_size: int = 64
) -> list[Atoms]:
    """The frames of ``target`` (module docstring) from the user's ``structures``.

    Raises:
        ValueError: no structures, or an unknown target.
    """
    if not structures:
        raise ValueError("the target system needs at least one structure")
    first = _bare(structures[0])
    if target == "md-molecule":
        return [first]
    if target == "md-box":
        return [_box(first, box_atoms)]
    if target == "batch":
        return [_bare(structures[k % len(structures)]) for k in range(batch_size)]
    raise ValueError(f"unknown target {target!r}")


def write_target(frames: Sequence[Atoms], path: str | Path) -> Path:
    """Write ``frames`` for the timing workers; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_frames(frames, path)
    return path
