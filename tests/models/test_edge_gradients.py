"""``Potential(..., compute_edge_gradients=True)``: ``dE/dr_ij`` per edge, both families.

Forces are the edge gradients' sums (``f_i = sum_j g_ij - sum_j g_ji``) and the virial their
``-sum_e r_e (x) g_e``, equal to autograd's forces and the strain-derivative virial in float64,
so the gradients are the whole dependence of the energy on positions (what the LAMMPS pair
style builds forces and per-atom virials from). Blocked evaluation: ``test_local_blocks``.
"""

from __future__ import annotations

import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.potential import edge_vectors
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule


@pytest.mark.parametrize("family", ["allegro", "mace"])
def test_edge_gradients_sum_to_the_forces_and_the_virial(family):
    model = {"allegro": tiny_allegro, "mace": tiny_mace}[family](torch.float64).eval()
    structures = [make_fcc_cu(repeat=2, seed=3), make_molecule("CH3CH2OH", seed=1)]
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in structures
    ]
    batch = collate(graphs)
    out = model(batch, compute_stress=True, compute_edge_gradients=True)
    gradient = out[keys.EDGE_GRADIENT]
    centre, neighbour = batch[keys.EDGE_INDEX]
    assert gradient.shape == (centre.shape[0], 3) and gradient.dtype == torch.float64
    assert gradient.abs().max() > 1e-3  # eV/Å: not trivially zero
    forces = torch.zeros_like(out[keys.FORCES])
    forces.index_add_(0, centre, gradient).index_add_(0, neighbour, -gradient)
    torch.testing.assert_close(forces, out[keys.FORCES], rtol=0, atol=1e-12)
    vectors = edge_vectors(batch[keys.POSITIONS], batch[keys.CELL], batch)
    per_edge = -(vectors.unsqueeze(2) * gradient.unsqueeze(1))
    virial = torch.zeros_like(out[keys.VIRIAL]).index_add_(0, batch[keys.BATCH][centre], per_edge)
    torch.testing.assert_close(virial, out[keys.VIRIAL], rtol=0, atol=1e-11)
    plain = model(batch, compute_stress=True)
    assert keys.EDGE_GRADIENT not in plain
    # MACE's plain call runs its radial MLP once per bond (EDGE_PAIRS): equal to rounding
    exact = not model.energy_model.uses_edge_pairs
    torch.testing.assert_close(
        plain[keys.FORCES], out[keys.FORCES], rtol=0, atol=0 if exact else 1e-12
    )
