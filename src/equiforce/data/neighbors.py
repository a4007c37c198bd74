"""Neighbour lists (vesin) for periodic, non-periodic and mixed-pbc structures."""

from __future__ import annotations

import numpy as np
import vesin


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
        edge_index: (2, n_edges) int64, rows [centre i, neighbour j], self pairs excluded
            (an atom's own periodic images are included).
        edge_shift: (n_edges, 3) float64, integer lattice shifts S with
            ``pos[j] - pos[i] + S @ cell`` the vector from i to j.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    box = np.asarray(cell, dtype=np.float64).copy()
    if not pbc.any():
        box = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(r_max), full_list=True)
    i, j, shifts = calculator.compute(
        points=positions, box=box, periodic=[bool(p) for p in pbc], quantities="ijS"
    )
    edge_index = np.stack([i, j]).astype(np.int64)
    edge_shift = shifts.astype(np.float64)
    order = np.lexsort((edge_index[1], edge_index[0]))
    return edge_index[:, order], edge_shift[order]
