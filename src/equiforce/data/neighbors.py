"""Neighbour lists (vesin) for periodic, non-periodic and mixed-pbc structures.

vesin needs a box it can work with: it crashes the process (SIGFPE) on a zero *periodic* cell
vector, and files carry all sorts of cells along non-periodic axes (zeros, a short dummy, or a
vector parallel to a periodic one). So the box handed to vesin keeps the periodic lattice
vectors, which must be linearly independent, and replaces every non-periodic one by a unit
vector orthogonal to the periodic ones. Shifts along non-periodic axes are always zero, so the
returned ``edge_shift`` is valid with the caller's original cell.
"""

from __future__ import annotations

import numpy as np
import vesin

# Smallest accepted |a|, |a x b| or |det| of the periodic lattice vectors (Å, Å^2, Å^3).
_DEGENERATE_MEASURE = 1e-6


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full (both directions) neighbour list within ``r_max``.

    Args:
        positions: (n_atoms, 3) float64, Å.
        cell: (3, 3) float64, Å, rows are lattice vectors; ignored along non-periodic axes.
        pbc: (3,) bool, periodicity along each lattice vector.
        r_max: cutoff radius, Å.

    Returns:
        edge_index: (2, n_edges) int64, rows [centre i, neighbour j], sorted by (i, j), self
            pairs excluded (an atom's own periodic images are included).
        edge_shift: (n_edges, 3) float64, integer lattice shifts S with
            ``pos[j] - pos[i] + S @ cell`` the vector from i to j.

    Raises:
        ValueError: on bad shapes, non-finite input, a non-positive cutoff, or periodic
            lattice vectors that are zero or linearly dependent.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3), got {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3), got {cell.shape}")
    if not (np.isfinite(positions).all() and np.isfinite(cell).all()):
        raise ValueError("positions and cell must be finite")
    if not r_max > 0:
        raise ValueError(f"r_max must be positive, got {r_max}")
    box = vesin_box(cell, pbc)
    calculator = vesin.NeighborList(cutoff=float(r_max), full_list=True)
    i, j, shifts = calculator.compute(
        points=positions, box=box, periodic=[bool(p) for p in pbc], quantities="ijS"
    )
    edge_index = np.stack([i, j]).astype(np.int64).reshape(2, -1)
    edge_shift = np.asarray(shifts, dtype=np.float64).reshape(-1, 3)
    order = np.lexsort((edge_index[1], edge_index[0]))
    return edge_index[:, order], edge_shift[order]


def vesin_box(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Box for vesin: periodic lattice vectors kept, non-periodic ones made orthonormal.

    Args:
        cell: (3, 3) float64, Å, rows are lattice vectors.
        pbc: (3,) bool.

    Returns:
        (3, 3) float64 box; all zeros when nothing is periodic.

    Raises:
        ValueError: when the periodic lattice vectors are zero or linearly dependent.
    """
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not pbc.any():
        return np.zeros((3, 3))
    periodic = np.asarray(cell, dtype=np.float64)[pbc]
    measure = np.sqrt(abs(np.linalg.det(periodic @ periodic.T)))
    if measure < _DEGENERATE_MEASURE:
        raise ValueError(
            f"periodic cell vectors {periodic.tolist()} (pbc={pbc.tolist()}) are zero or "
            "linearly dependent"
        )
    # Right singular vectors beyond rank(periodic) span the orthogonal complement.
    _, _, vt = np.linalg.svd(periodic)
    complement = iter(vt[len(periodic) :])
    box = np.empty((3, 3))
    for axis in range(3):
        box[axis] = cell[axis] if pbc[axis] else next(complement)
    return box
