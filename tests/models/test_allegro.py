"""Allegro-specific properties: strict locality, species-independent cost, dtypes, cutoffs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.allegro import EDGE_ENERGY
from equiforce.testing import checks
from equiforce.testing.models import tiny_allegro
from equiforce.testing.tolerances import TOL

R_MAX = 4.0  # tiny_allegro's cutoff


def _pair_energies(model, atoms: Atoms) -> dict[tuple[int, int], float]:
    """Energy of every ordered pair (centre, neighbour) of a non-periodic structure."""
    graph = configuration_to_graph(atoms_to_configuration(atoms), model.type_names, model.r_max)
    batch = collate([graph])
    out = model(batch, compute_forces=False, extra_outputs=(EDGE_ENERGY,))
    centre, neighbour = batch[keys.EDGE_INDEX].tolist()
    energies = out[EDGE_ENERGY].detach().tolist()
    return dict(zip(zip(centre, neighbour, strict=True), energies, strict=True))


def _chain(last_x: float) -> Atoms:
    """C-O pair, an H within r_max of O only, and an H at x = last_x."""
    positions = [[0.0, 0.0, 0.0], [1.2, 0.1, 0.0], [4.5, 0.3, 0.2], [last_x, -0.2, 0.4]]
    return Atoms("COHH", positions=positions)


def test_pair_energy_ignores_atoms_beyond_r_max_of_both_atoms():
    model = tiny_allegro(avg_num_neighbors=2.0)
    far, near = _chain(12.0), _chain(6.5)  # the last H moves next to the third atom only
    for atoms in (far, near):
        distances = atoms.get_all_distances()
        assert distances[3, 0] > R_MAX and distances[3, 1] > R_MAX
    before, after = _pair_energies(model, far), _pair_energies(model, near)
    assert (2, 3) in after and (2, 3) not in before  # the third atom's environment changed
    assert before[(1, 2)] != after[(1, 2)] or before[(2, 1)] != after[(2, 1)]
    for pair in [(0, 1), (1, 0)]:
        np.testing.assert_array_equal(after[pair], before[pair], err_msg=str(pair))


def test_pair_energies_add_up_to_atomic_energies():
    atoms = _chain(6.5)
    energies = (-1.0, -2.0, -3.0, 0.5, 0.25)
    model = tiny_allegro(atomic_energies=energies, scale=1.7, shift=0.3, avg_num_neighbors=2.0)
    pairs = _pair_energies(model, atoms)
    node = checks.predict(model, [atoms])[keys.NODE_ENERGY]
    types = [model.type_names.index(s) for s in atoms.get_chemical_symbols()]
    for i in range(len(atoms)):
        total = energies[types[i]] + 0.3 + sum(e for (c, _), e in pairs.items() if c == i)
        np.testing.assert_allclose(node[i], total, atol=TOL.fp64.atol, rtol=TOL.fp64.rtol)


def test_pairs_beyond_their_own_type_cutoff_contribute_nothing():
    n_types = 5
    pair_r_max = np.full((n_types, n_types), R_MAX)
    pair_r_max[0, 2] = 3.0  # H centre, O neighbour
    model = tiny_allegro(pair_r_max=tuple(pair_r_max.flatten()))
    atoms = Atoms("HO", positions=[[0.0, 0.0, 0.0], [3.5, 0.0, 0.0]])
    pairs = _pair_energies(model, atoms)
    assert pairs[(0, 1)] == 0.0 and pairs[(1, 0)] != 0.0


def test_parameter_count_grows_only_with_the_species_embeddings():
    small = tiny_allegro(type_names=("H", "C"))
    large = tiny_allegro(type_names=("H", "C", "N", "O", "F", "Cu", "Au"))
    embed_dim = small.spec.num_scalar_features

    def count(model, embeddings: bool) -> int:
        return sum(
            p.numel()
            for name, p in model.named_parameters()
            if name.endswith("_embed") == embeddings
        )

    assert count(small, False) == count(large, False)
    assert count(large, True) - count(small, True) == 5 * embed_dim


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parameters_follow_dtype_and_outputs_are_float64(dtype):
    model = tiny_allegro(dtype, l_max=2)
    assert checks.model_dtype_matches(model, dtype)
    out = checks.predict(model, [_chain(6.5)])
    assert out[keys.ENERGY].dtype == np.float64 and out[EDGE_ENERGY].dtype == np.float64
    assert np.isfinite(out[keys.FORCES]).all()


def test_invalid_spec_names_the_field():
    with pytest.raises(ValueError, match="pair_r_max"):
        tiny_allegro(pair_r_max=(5.0,) * 25)
    with pytest.raises(ValueError, match="mlp_nonlinearity"):
        tiny_allegro(mlp_nonlinearity="relu")
