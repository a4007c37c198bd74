"""Hessian-vector products of a ``Potential`` by double backward, and random probe vectors.

The Hessian is ``H = d^2 E / dx dx`` (eV/Å^2) over all 3 n_atoms position components of a
batch; graphs are independent, so ``H`` is block diagonal and one product serves a whole
batch. ``Potential.forward`` differentiates with respect to its own copy of the positions, so
the product is formed here from the energy model directly, with the same geometry boundary
(``potential.edge_vectors`` in float64).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from equiforce.data import keys
from equiforce.models.potential import Potential, edge_vectors


def hessian_vector_product(
    model: Potential,
    batch: dict[str, torch.Tensor],
    vectors: torch.Tensor,
    create_graph: bool = False,
) -> torch.Tensor:
    """``H v`` for each probe vector.

    Args:
        model: the potential.
        batch: batch dict (positions float64, Å).
        vectors: (n_vectors, n_atoms, 3) float64 probe directions (any norm).
        create_graph: keep the graph, so the products can be differentiated with respect to
            the model's parameters (training by triple backward).

    Returns:
        (n_vectors, n_atoms, 3) float64, eV/Å^2 times the unit of ``vectors``.
    """
    inputs = {name: batch[name] for name in keys.MODEL_INPUT_KEYS if name in batch}
    pos = inputs[keys.POSITIONS].to(torch.float64).detach().requires_grad_(True)
    cell = inputs[keys.CELL].to(torch.float64)
    inputs[keys.POSITIONS] = pos
    inputs[keys.CELL] = cell
    inputs[keys.EDGE_VEC] = edge_vectors(pos, cell, inputs)
    energy = model.energy_model(inputs)[keys.NODE_ENERGY].sum()
    (gradient,) = torch.autograd.grad(energy, pos, create_graph=True)
    products = []
    for k, vector in enumerate(vectors):
        keep = create_graph or k < len(vectors) - 1
        (product,) = torch.autograd.grad(
            (gradient * vector).sum(), pos, create_graph=create_graph, retain_graph=keep
        )
        products.append(product)
    return torch.stack(products)


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
