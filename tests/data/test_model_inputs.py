"""``model_inputs``: an unlabelled structure's batch of model inputs, as the full pipeline gives
it, and ``type_indices``' vectorised lookup with its error naming the first unknown atom."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import (
    atoms_to_configuration,
    configuration_to_graph,
    model_inputs,
    type_indices,
)
from equiforce.testing.structures import make_fcc_cu, make_molecule, make_slab, make_triclinic_cu

SPECIES = ("H", "C", "O", "Cu", "Au")


@pytest.mark.parametrize(
    "atoms",
    [make_molecule("CH3CH2OH", seed=1), make_fcc_cu(2), make_triclinic_cu(seed=2), make_slab()],
    ids=["molecule", "fcc", "triclinic", "slab"],
)
def test_model_inputs_equal_the_collated_graph_on_every_model_input(atoms):
    config = atoms_to_configuration(atoms, "test structure")
    full = collate([configuration_to_graph(config, SPECIES, 4.0)])
    lean = model_inputs(config, SPECIES, 4.0)
    names = (*keys.MODEL_INPUT_KEYS, *keys.GRAPH_STATE_KEYS)
    assert set(lean) == set(names)
    for name in names:
        assert lean[name].dtype == full[name].dtype, name
        assert lean[name].shape == full[name].shape, name
        assert torch.equal(lean[name], full[name]), name
        assert lean[name].is_contiguous(), name


def test_type_indices_map_every_atom_and_name_the_first_unknown_one():
    numbers = np.array([8, 1, 1, 6, 29])
    assert type_indices(numbers, SPECIES, "s").tolist() == [2, 0, 0, 1, 3]
    assert type_indices(np.array([], dtype=np.int64), SPECIES, "s").tolist() == []
    with pytest.raises(ValueError, match=r"frame 3: element N \(atom 2\) is unknown.*'Au'\]"):
        type_indices(np.array([1, 6, 7, 26]), SPECIES, "frame 3")
    with pytest.raises(ValueError, match=r"element Z=500 \(atom 0\)"):
        type_indices(np.array([500]), SPECIES, "s")
