"""A one-domain run of an energy model as a domain-decomposed MD code does it (test helper).

The structure is split by a plane (x below the median: the local atoms). The domain's graph
holds the edges centred on its local atoms; every neighbour that is not a local atom in the
home cell (another domain's atom, or a periodic image) is a separate ghost row. Before each
layer k >= 1 the exchange writes into the ghost rows the halo their owners computed, taken
from a run over the whole structure (what a forward halo exchange delivers). The local
atoms' energies must then equal the whole structure's exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.contract import AtomicEnergyModel, run_layers
from equiforce.models.potential import edge_vectors


def model_inputs(atoms: Atoms, type_names: list[str], r_max: float) -> dict[str, torch.Tensor]:
    """The energy model's input batch of one structure (``edge_vec`` included)."""
    graph = configuration_to_graph(atoms_to_configuration(atoms), type_names, r_max)
    batch = collate([graph])
    batch[keys.EDGE_VEC] = edge_vectors(batch[keys.POSITIONS], batch[keys.CELL], batch)
    return batch


def domain_inputs(
    whole: dict[str, torch.Tensor], local: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The domain of the ``local`` atoms: its inputs and each row's atom in ``whole``.

    Rows are the local atoms (in ``local`` order), then one ghost per distinct
    (neighbour, lattice shift) of the domain's edges that is not a local atom itself.
    """
    centre, neighbour = whole[keys.EDGE_INDEX]
    shift = whole[keys.EDGE_SHIFT]
    n_atoms = whole[keys.ATOM_TYPE].shape[0]
    row = torch.full((n_atoms,), -1, dtype=torch.long)
    row[local] = torch.arange(local.shape[0])
    kept = (row[centre] >= 0).nonzero().flatten()
    centre, neighbour, shift = centre[kept], neighbour[kept], shift[kept]
    ghost = (row[neighbour] < 0) | (shift != 0).any(dim=1)
    images = torch.cat([neighbour[ghost, None].to(shift.dtype), shift[ghost]], dim=1)
    unique, inverse = images.unique(dim=0, return_inverse=True)
    owner = torch.cat([local, unique[:, 0].long()])
    target = row[neighbour].clone()
    target[ghost] = local.shape[0] + inverse
    inputs = {
        keys.ATOM_TYPE: whole[keys.ATOM_TYPE][owner],
        keys.BATCH: torch.zeros(owner.shape[0], dtype=torch.long),
        keys.EDGE_INDEX: torch.stack([row[centre], target]),
        keys.EDGE_SHIFT: shift,
        keys.EDGE_VEC: whole[keys.EDGE_VEC][kept],
    }
    return inputs, owner


def assert_halo_run_equals_whole(
    model: AtomicEnergyModel, atoms: Atoms, tol: float = 1e-12
) -> None:
    """Local energies of the left half with halo exchange == the whole structure's (float64)."""
    whole = model_inputs(atoms, model.type_names, model.r_max)
    halos: dict[int, torch.Tensor] = {}

    def record(index: int, halo: torch.Tensor) -> torch.Tensor:
        halos[index] = halo
        return halo

    x = whole[keys.POSITIONS][:, 0]
    local = (x < x.median()).nonzero().flatten()
    with torch.no_grad():
        reference = run_layers(model, whole, record)[keys.NODE_ENERGY][local]
        inputs, owner = domain_inputs(whole, local)
        n_local = local.shape[0]

        def exchange(index: int, halo: torch.Tensor) -> torch.Tensor:
            filled = halo.clone()
            filled[n_local:] = halos[index][owner[n_local:]]
            return filled

        domain = run_layers(model, inputs, exchange)[keys.NODE_ENERGY][:n_local]
        without = run_layers(model, inputs)[keys.NODE_ENERGY][:n_local]
    assert owner.shape[0] > n_local, "the domain has no ghosts: the test shows nothing"
    np.testing.assert_allclose(domain.numpy(), reference.numpy(), rtol=tol, atol=tol)
    if model.message_passing_layers > 1:  # the exchange is what makes it exact
        assert (without - reference).abs().max() > 1e3 * tol
    else:
        np.testing.assert_allclose(without.numpy(), reference.numpy(), rtol=tol, atol=tol)
