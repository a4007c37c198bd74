"""Stability figures of an MD trajectory: bond-length deviation and energy drift.

* bond-length deviation: over the pairs bonded in the starting structure (distance below
  ``bond_scale`` x the sum of covalent radii), the largest ``|d(t) - d(0)|`` in Å; a bond
  counts as broken when it stretches beyond ``break_scale`` x the sum of covalent radii;
* energy drift (NVE): slope of a least-squares line through total energy per atom vs time,
  in meV/atom/ps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from ase import Atoms


@dataclass(frozen=True)
class BondDeviation:
    """How far the bonds of the starting structure moved along a trajectory.

    Attributes:
        n_bonds: bonded pairs in the first frame (each pair, periodic image included, once).
        max_deviation: largest ``|d(t) - d(0)|`` over bonds and frames, Å (0 without bonds).
        n_broken: bonds that exceeded the break length in at least one frame.
    """

    n_bonds: int
    max_deviation: float
    n_broken: int

    @property
    def broken(self) -> bool:
        """Whether any bond broke."""
        return self.n_broken > 0


class BondMonitor:
    """Follows the bonds of a reference structure through later frames.

    Bonds keep the lattice image they had in the reference frame, so frames must carry
    unwrapped positions (as ASE's integrators produce them).

    Args:
        reference: the starting structure.
        bond_scale: pairs closer than ``bond_scale * (r_cov_i + r_cov_j)`` are bonded.
        break_scale: a bond longer than ``break_scale * (r_cov_i + r_cov_j)`` is broken.
    """

    def __init__(self, reference: Atoms, bond_scale: float = 1.2, break_scale: float = 1.5):
        from ase.data import covalent_radii
        from ase.neighborlist import neighbor_list

        radii = covalent_radii[reference.numbers]
        i, j, shift = neighbor_list("ijS", reference, list(bond_scale * radii))
        # i-j and j-i (image -S) are one bond; an atom bonded to its own image S also has -S.
        leading_shift = shift[np.arange(len(shift)), np.argmax(shift != 0, axis=1)]
        keep = (i < j) | ((i == j) & (leading_shift > 0))
        self._i, self._j, self._shift = i[keep], j[keep], shift[keep].astype(np.float64)
        self._break_length = break_scale * (radii[self._i] + radii[self._j])
        self._d0 = self._lengths(reference)
        self._max_deviation = np.zeros(len(self._i))
        self._broken = np.zeros(len(self._i), dtype=bool)

    def _lengths(self, atoms: Atoms) -> np.ndarray:
        pos = atoms.positions
        vec = pos[self._j] - pos[self._i] + self._shift @ atoms.cell.array
        return np.linalg.norm(vec, axis=1)

    def update(self, atoms: Atoms) -> None:
        """Account for one frame (same atoms, same order as the reference)."""
        lengths = self._lengths(atoms)
        np.maximum(self._max_deviation, np.abs(lengths - self._d0), out=self._max_deviation)
        self._broken |= lengths > self._break_length

    def result(self) -> BondDeviation:
        """The deviation over all frames seen so far."""
        return BondDeviation(
            n_bonds=len(self._i),
            max_deviation=float(self._max_deviation.max(initial=0.0)),
            n_broken=int(self._broken.sum()),
        )


def bond_length_deviation(
    frames: Iterable[Atoms], bond_scale: float = 1.2, break_scale: float = 1.5
) -> BondDeviation:
    """Bond-length deviation of a trajectory relative to its first frame (see ``BondMonitor``)."""
    iterator = iter(frames)
    try:
        monitor = BondMonitor(next(iterator), bond_scale, break_scale)
    except StopIteration:
        raise ValueError("bond_length_deviation needs at least one frame") from None
    for atoms in iterator:
        monitor.update(atoms)
    return monitor.result()


def energy_drift(time_fs: np.ndarray, total_energy: np.ndarray, n_atoms: int) -> float:
    """Slope of the least-squares line through total energy per atom vs time.

    Args:
        time_fs: (n_samples,) simulation times, fs.
        total_energy: (n_samples,) potential + kinetic energy, eV.
        n_atoms: atoms in the system.

    Returns:
        Drift in meV/atom/ps.
    """
    if len(time_fs) < 2:
        raise ValueError("energy_drift needs at least two samples")
    time_ps = np.asarray(time_fs, dtype=np.float64) / 1000.0
    energy_mev = 1000.0 * np.asarray(total_energy, dtype=np.float64) / n_atoms
    slope, _ = np.polyfit(time_ps, energy_mev, 1)
    return float(slope)
