"""Random probe vectors for distillation's Hessian targets (the products themselves:
``equiforce.models.hessian.hessian_vector_product``)."""

from __future__ import annotations

import hashlib

import numpy as np


def probe_vectors(structure_key: str, n_atoms: int, n_vectors: int, seed: int) -> np.ndarray:
    """Deterministic random unit probe vectors of one structure.

    Args:
        structure_key: the structure's hash (hex); with ``seed`` it seeds the generator, so a
            structure always gets the same vectors.
        n_atoms: atoms in the structure.
        n_vectors: how many vectors.
        seed: run seed.

    Returns:
        (n_vectors, n_atoms, 3) float64, each of unit 2-norm over its 3 n_atoms components.
    """
    digest = hashlib.sha256(f"{structure_key}:{seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    vectors = rng.standard_normal((n_vectors, n_atoms, 3))
    return vectors / np.linalg.norm(vectors.reshape(n_vectors, -1), axis=1)[:, None, None]
