"""Second derivatives of a ``Potential``'s energy with respect to positions, by double backward.

The Hessian is ``H = d^2 E / dx dx`` (eV/Å^2) over all 3 n_atoms position components of a
batch; graphs are independent, so ``H`` is block diagonal. ``Potential.forward``
differentiates with respect to its own copy of the positions, so the products are formed here
from the energy model directly, with the same geometry boundary (``potential.edge_vectors`` in
float64). ``hessian_vector_product`` gives ``H v`` for a few probe vectors (distillation's
Hessian targets); ``hessian`` the whole matrix of one structure (vibrational modes, phonons at
the supercell's wave vectors, ASE's ``get_hessian``).
"""

from __future__ import annotations

import torch

from equiforce.data import keys
from equiforce.models.potential import Potential, edge_vectors, select_inputs


def _positions_gradient(
    model: Potential, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions, dE/dpositions)``: the float64 positions (n_atoms, 3) Å made a leaf and the
    energy's gradient with respect to them (n_atoms, 3) eV/Å, with its graph kept."""
    inputs = select_inputs(model.energy_model, batch)
    model.energy_model.check_graph_inputs(inputs)
    pos = inputs[keys.POSITIONS].to(torch.float64).detach().requires_grad_(True)
    cell = inputs[keys.CELL].to(torch.float64)
    inputs[keys.POSITIONS] = pos
    inputs[keys.CELL] = cell
    inputs[keys.EDGE_VEC] = edge_vectors(pos, cell, inputs)
    energy = model.energy_model(inputs)[keys.NODE_ENERGY].sum()
    (gradient,) = torch.autograd.grad(energy, pos, create_graph=True)
    return pos, gradient


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
    pos, gradient = _positions_gradient(model, batch)
    products = []
    for k, vector in enumerate(vectors):
        keep = create_graph or k < len(vectors) - 1
        (product,) = torch.autograd.grad(
            (gradient * vector).sum(), pos, create_graph=create_graph, retain_graph=keep
        )
        products.append(product)
    return torch.stack(products)


def hessian(model: Potential, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The whole Hessian of a batch's energy, one backward pass per position component.

    Args:
        model: the potential.
        batch: batch dict of one structure (positions float64, Å; a batch of several gives
            their block-diagonal Hessian).

    Returns:
        (3 n_atoms, 3 n_atoms) float64, eV/Å^2, row and column ``3 i + a`` the component
        ``a`` of atom ``i``.
    """
    pos, gradient = _positions_gradient(model, batch)
    flat = gradient.reshape(-1)
    rows = []
    for k in range(flat.shape[0]):
        (row,) = torch.autograd.grad(flat[k], pos, retain_graph=k < flat.shape[0] - 1)
        rows.append(row.reshape(-1))
    return torch.stack(rows)
