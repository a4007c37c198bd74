"""Benchmark systems: one molecule, a batch of rattled copies, periodic boxes, or a file's frames.

The generated ones download and read nothing. Names:

* ``molecule``: acetylacetone (enol form, C5H8O2, 15 atoms), rattled with ``seed``;
* ``batchN`` (``batch64`` by default): N copies of it, each with its own seeded rattle, run as
  one batch of N graphs;
* ``box-N``: a periodic cubic box of liquid-like water at 1 g/cm^3 with ``3 * round(N / 3)``
  atoms (``box-3000``: 1,000 molecules, 31.0 Å). Molecules sit on the sites of a simple cubic
  grid (a seeded random subset when ``round(N / 3)`` is not a cube) with seeded random
  orientations, re-drawn until no two atoms of different molecules are closer than
  ``MIN_INTERMOLECULAR_A``;
* ``fcc-N``: periodic fcc aluminium (a = 4.05 Å, 0.060 atoms/Å^3), the cubic supercell of
  ``n = round((N / 4) ** (1/3))`` cells per side (``4 n^3`` atoms: ``fcc-864``, ``fcc-97556``,
  ``fcc-1000188``), every atom displaced by seeded Gaussian noise (``_RATTLE_A``) so that forces
  are not zero by symmetry; lattice-ordered atoms. The scaling series: the edge count grows in
  proportion to the atoms (~13.4 edges per atom at r_max 4 Å, ~35 at 5 Å);
* ``fcc-N-shuffled``: the same box with its atoms in seeded random order (neighbours in space
  are no longer neighbours in the atom index);
* ``file:PATH`` or ``file:PATH@INDEX``: the frames of a structure file ``ase.io.read`` reads
  (extxyz, ...), ``INDEX`` in its syntax (``@0``, ``@:5`` the first five; default all), run as
  one batch of those graphs: the user's own structures (e.g.
  ``file:../shared/data/3bpa/train_300K.xyz@:5``, a 3BPA batch of 5).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from equiforce.data.neighbors import neighbor_list

__all__ = [
    "DEFAULT_SYSTEMS",
    "MIN_INTERMOLECULAR_A",
    "WATER_VOLUME_A3",
    "acetylacetone",
    "fcc_box",
    "load_frames",
    "make_system",
    "parse_system",
    "save_frames",
    "system_atoms",
    "water_box",
]

DEFAULT_SYSTEMS = ("molecule", "batch64", "box-3000")
WATER_VOLUME_A3 = 18.01528 / 6.02214076e23 * 1e24  # Å^3 per molecule at 1 g/cm^3
MIN_INTERMOLECULAR_A = 1.5  # closest allowed approach of atoms in different molecules, Å
_RATTLE_A = 0.05  # standard deviation of the molecule rattle, Å
_MAX_REDRAWS = 200
_OH_A, _HOH_DEG = 0.9572, 104.52  # rigid TIP3P-like water geometry
FCC_AL_A = 4.05  # lattice constant of aluminium, Å

# Enol acetylacetone, planar backbone with the intramolecular O-H...O bond; Å.
_ACAC = (
    ("C", (-1.22, 0.70, 0.0)),
    ("C", (0.00, 0.00, 0.0)),
    ("C", (1.22, 0.70, 0.0)),
    ("C", (-2.50, -0.10, 0.0)),
    ("C", (2.50, -0.10, 0.0)),
    ("O", (-1.25, 1.98, 0.0)),
    ("O", (1.25, 1.98, 0.0)),
    ("H", (0.00, -1.08, 0.0)),
    ("H", (0.30, 2.20, 0.0)),
    ("H", (-3.35, 0.58, 0.0)),
    ("H", (-2.52, -0.75, 0.88)),
    ("H", (-2.52, -0.75, -0.88)),
    ("H", (3.35, 0.58, 0.0)),
    ("H", (2.52, -0.75, 0.88)),
    ("H", (2.52, -0.75, -0.88)),
)


def acetylacetone(seed: int = 0, rattle: float = _RATTLE_A) -> Atoms:
    """One enol acetylacetone molecule (15 atoms, no cell), Gaussian-rattled.

    Args:
        seed: seed of the rattle.
        rattle: standard deviation of the displacement of every coordinate, Å.
    """
    symbols = [s for s, _ in _ACAC]
    positions = np.array([p for _, p in _ACAC], dtype=np.float64)
    positions += np.random.default_rng(seed).normal(scale=rattle, size=positions.shape)
    return Atoms(symbols, positions=positions, pbc=False)


def _water_local() -> np.ndarray:
    """(3, 3) O, H, H positions of one water molecule centred on their mean, Å."""
    angle = math.radians(_HOH_DEG)
    local = _OH_A * np.array(
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [math.cos(angle), math.sin(angle), 0]]
    )
    return local - local.mean(axis=0)


def _random_rotations(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3, 3) uniformly random proper rotations (QR of Gaussian matrices)."""
    q, r = np.linalg.qr(rng.normal(size=(count, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q * np.sign(np.linalg.det(q))[:, None, None]


def _clashing_molecules(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Indices of molecules with an atom closer than the limit to another molecule's atom."""
    edge_index, _ = neighbor_list(positions, cell, np.ones(3, bool), MIN_INTERMOLECULAR_A)
    molecule = edge_index // 3
    clash = molecule[0] != molecule[1]
    return np.unique(molecule[0][clash])


def water_box(n_atoms: int, seed: int = 0) -> Atoms:
    """Periodic cubic water box at 1 g/cm^3 with ``3 * round(n_atoms / 3)`` atoms.

    Args:
        n_atoms: wanted number of atoms (>= 3).
        seed: seed of the grid sites and orientations.

    Returns:
        ``Atoms`` (O, H, H per molecule) with a cubic cell and full periodicity.

    Raises:
        ValueError: ``n_atoms < 3``, or no clash-free orientation found (not expected at
            this density).
    """
    n_molecules = round(n_atoms / 3)
    if n_molecules < 1:
        raise ValueError(f"a water box needs at least 3 atoms, got {n_atoms}")
    rng = np.random.default_rng(seed)
    length = (n_molecules * WATER_VOLUME_A3) ** (1.0 / 3.0)
    per_side = math.ceil(round(n_molecules ** (1.0 / 3.0), 9))
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[np.sort(rng.choice(len(grid), n_molecules, replace=False))]
    centres = (sites + 0.5) * (length / per_side)
    cell = np.eye(3) * length
    local = _water_local()
    rotations = _random_rotations(rng, n_molecules)
    for _ in range(_MAX_REDRAWS):
        positions = (centres[:, None, :] + local @ rotations.transpose(0, 2, 1)).reshape(-1, 3)
        clashing = _clashing_molecules(positions, cell)
        if clashing.size == 0:
            return Atoms("OH2" * n_molecules, positions=positions, cell=cell, pbc=True)
        rotations[clashing] = _random_rotations(rng, clashing.size)
    raise ValueError(f"no clash-free water box of {n_molecules} molecules (seed {seed})")


def _fcc_cells(n_atoms: int) -> int:
    """Cubic fcc cells per side of the supercell nearest ``n_atoms`` atoms (at least 1)."""
    return max(1, round((n_atoms / 4) ** (1.0 / 3.0)))


def fcc_box(n_atoms: int, seed: int = 0, shuffled: bool = False) -> Atoms:
    """Periodic fcc aluminium, the cubic supercell with the atom count nearest ``n_atoms``.

    Args:
        n_atoms: wanted number of atoms (>= 4); the box has ``4 n^3`` with
            ``n = round((n_atoms / 4) ** (1/3))``.
        seed: seed of the rattle (and of the order when ``shuffled``).
        shuffled: atoms in seeded random order instead of the lattice order.
    """
    cells = _fcc_cells(n_atoms)
    corner = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    positions = ((grid + corner) * FCC_AL_A).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    positions = positions + rng.normal(scale=_RATTLE_A, size=positions.shape)
    if shuffled:
        positions = positions[rng.permutation(len(positions))]
    cell = np.eye(3) * FCC_AL_A * cells
    return Atoms(f"Al{len(positions)}", positions=positions, cell=cell, pbc=True)


def _file_frames(name: str) -> list[Atoms]:
    """The frames of a ``file:PATH[@INDEX]`` system (module docstring).

    Raises:
        ValueError: a missing or unreadable file, or an index selecting no frame (named).
    """
    from ase.io import read

    path, _, index = name.removeprefix("file:").partition("@")
    if not os.path.isfile(path):
        raise ValueError(f"system {name!r}: no file {path}")
    try:
        frames = read(path, index=index or ":")
    except Exception as err:  # ase raises many kinds for a malformed file or index
        raise ValueError(f"system {name!r}: cannot read {path} at index {index!r}: {err}") from err
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise ValueError(f"system {name!r}: index {index!r} selects no frame of {path}")
    return [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]


def parse_system(name: str) -> tuple[str, int]:
    """``(kind, count)`` of a system name: ``("molecule", 1)``, ``("batch", N)``, ``("box", N)``,
    ``("fcc", N)``, ``("fcc-shuffled", N)``, ``("file", number of frames)`` (a file is read).

    Raises:
        ValueError: an unknown or malformed name (the accepted forms are listed), or a file
            system that cannot be read.
    """
    if name == "molecule":
        return "molecule", 1
    if name.startswith("file:"):
        return "file", len(_file_frames(name))
    forms = (
        ("batch", r"batch(\d+)", 1),
        ("box", r"box-(\d+)", 3),
        ("fcc", r"fcc-(\d+)", 4),
        ("fcc-shuffled", r"fcc-(\d+)-shuffled", 4),
    )
    for kind, pattern, least in forms:
        match = re.fullmatch(pattern, name)
        if match and int(match.group(1)) >= least:
            return kind, int(match.group(1))
    raise ValueError(
        f"unknown system {name!r}: use 'molecule', 'batchN' (N >= 1 copies, e.g. batch64), "
        "'box-N' (a water box of about N >= 3 atoms, e.g. box-3000) or 'fcc-N' / "
        "'fcc-N-shuffled' (fcc aluminium of about N >= 4 atoms, e.g. fcc-97556) or "
        "'file:PATH[@INDEX]' (the frames of a structure file)"
    )


def system_atoms(name: str) -> int:
    """Number of atoms of ``make_system(name)``, without building it."""
    kind, count = parse_system(name)
    if kind == "file":
        return sum(len(a) for a in _file_frames(name))
    if kind == "box":
        return 3 * round(count / 3)
    if kind.startswith("fcc"):
        return 4 * _fcc_cells(count) ** 3
    return len(_ACAC) * count


def make_system(name: str, seed: int = 0) -> list[Atoms]:
    """The structures of one named system (see the module docstring).

    Args:
        name: ``molecule``, ``batchN``, ``box-N``, ``fcc-N``, ``fcc-N-shuffled`` or
            ``file:PATH[@INDEX]``.
        seed: base seed of rattles and water orientations (a file's frames are as read).

    Returns:
        The structures, evaluated together as one batch.

    Raises:
        ValueError: an unknown or malformed name.
    """
    kind, count = parse_system(name)
    if kind == "file":
        return _file_frames(name)
    if kind == "box":
        return [water_box(count, seed)]
    if kind.startswith("fcc"):
        return [fcc_box(count, seed, shuffled=kind == "fcc-shuffled")]
    return [acetylacetone(seed + k) for k in range(count)]


def save_frames(frames: Sequence[Atoms], path: str | os.PathLike) -> None:
    """Write structures to an ``.npz`` file (numbers, positions, cells, pbc, sizes)."""
    np.savez(
        path,
        numbers=np.concatenate([a.numbers for a in frames]),
        positions=np.concatenate([a.positions for a in frames]),
        cells=np.stack([a.cell.array for a in frames]),
        pbc=np.stack([a.pbc for a in frames]),
        sizes=np.array([len(a) for a in frames]),
    )


def load_frames(path: str | os.PathLike) -> list[Atoms]:
    """Read structures written by ``save_frames``."""
    with np.load(path) as data:
        bounds = np.concatenate([[0], np.cumsum(data["sizes"])])
        return [
            Atoms(
                numbers=data["numbers"][start:stop],
                positions=data["positions"][start:stop],
                cell=cell,
                pbc=pbc,
            )
            for start, stop, cell, pbc in zip(
                bounds[:-1], bounds[1:], data["cells"], data["pbc"], strict=True
            )
        ]
