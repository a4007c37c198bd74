"""Feature- and Hessian-matching terms: HVPs, gradient checks, graphs without targets."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.hessian import hessian_vector_product
from equiforce.models.potential import NODE_FEATURES
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.testing.tolerances import TOL
from equiforce.workflows.distill.auxiliary import DistillationLoss, geometry_key
from equiforce.workflows.distill.hessian import probe_vectors


def _batch(model, structures):
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in structures
    ]
    return collate(graphs)


def _forces(model, batch, pos):
    moved = dict(batch)
    moved[keys.POSITIONS] = pos
    return model(moved, compute_forces=True, create_graph=False)[keys.FORCES].detach()


def test_hessian_vector_products_match_central_differences_of_forces():
    """Hessian vector products match central differences of forces."""
    model = tiny_mace()
    batch = _batch(model, [make_molecule("CH3CH2OH", seed=1), make_fcc_cu(repeat=1, seed=2)])
    n_atoms = batch[keys.POSITIONS].shape[0]
    vectors = torch.as_tensor(probe_vectors("x", n_atoms, 2, seed=0))
    products = hessian_vector_product(model, batch, vectors)
    step = 1e-4
    pos = batch[keys.POSITIONS]
    for vector, product in zip(vectors, products, strict=True):
        plus, minus = (
            _forces(model, batch, pos + step * vector),
            _forces(model, batch, pos - step * vector),
        )
        finite = -(plus - minus) / (2 * step)
        torch.testing.assert_close(product, finite, atol=TOL.finite_difference.atol, rtol=0)


class _Wrapped(nn.Module):
    """Model and loss in one module, so ``functional_call`` can substitute any parameter."""

    def __init__(self, model, loss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch):
        pred = self.model(
            batch, compute_forces=True, create_graph=True, extra_outputs=self.loss.extra_outputs
        )
        return self.loss(self.model, batch, pred)


def _targets(model, structures, n_features, n_vectors=2, seed=0):
    """Random feature and HVP targets for ``structures``."""
    rng = np.random.default_rng(seed)
    targets = {}
    for k, atoms in enumerate(structures):
        config = atoms_to_configuration(atoms)
        n = len(atoms)
        targets[geometry_key(config.atomic_numbers, config.positions)] = {
            "features": rng.normal(size=(n, n_features)).astype(np.float32),
            "vectors": probe_vectors(str(k), n, n_vectors, seed).transpose(1, 0, 2),
            "hvp": rng.normal(size=(n, n_vectors, 3)),
        }
    return targets


def test_feature_and_hessian_terms_pass_gradcheck_in_float64():
    """Feature and hessian terms pass gradcheck in float64."""
    model = tiny_mace(num_interactions=1, num_channels=4, max_L=0, radial_mlp=(4,))
    structures = [make_molecule("CH3CH2OH", seed=1), make_fcc_cu(repeat=1, seed=2)]
    batch = _batch(model, structures)
    n_student = model(batch, compute_forces=False, extra_outputs=(NODE_FEATURES,))
    n_student = n_student[NODE_FEATURES].shape[1]
    loss = DistillationLoss(_targets(model, structures, 5), 0.7, 0.3, n_student, seed=1)
    wrapped = _Wrapped(model, loss)
    names = ["loss.feature_map.weight", "loss.feature_map.bias"]
    readout = [
        n for n, p in wrapped.named_parameters() if n.startswith("model.") and p.numel() <= 8
    ]
    names.append(readout[-1])
    params = dict(wrapped.named_parameters())

    def as_function(*values):
        return torch.func.functional_call(wrapped, dict(zip(names, values, strict=True)), (batch,))

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(as_function, inputs, atol=1e-7, rtol=1e-5)


def test_loss_ignores_graphs_without_targets():
    """Loss ignores graphs without targets."""
    model = tiny_mace()
    structures = [make_molecule("CH3CH2OH", seed=1), make_fcc_cu(repeat=1, seed=2)]
    batch = _batch(model, structures)
    pred = model(batch, compute_forces=True, extra_outputs=(NODE_FEATURES,))
    n_student = pred[NODE_FEATURES].shape[1]
    both = _targets(model, structures, 3)
    first_key = next(iter(both))
    loss_both = DistillationLoss(both, 1.0, 1.0, n_student, seed=1)
    loss_first = DistillationLoss({first_key: both[first_key]}, 1.0, 1.0, n_student, seed=1)
    loss_single = DistillationLoss({first_key: both[first_key]}, 1.0, 1.0, n_student, seed=1)
    assert len(loss_both._lookup(batch)) == 2 and len(loss_first._lookup(batch)) == 1
    single = _batch(model, structures[:1])
    value_in_pair = loss_first(model, batch, pred)
    pred_alone = model(single, compute_forces=True, extra_outputs=loss_single.extra_outputs)
    value_alone = loss_single(model, single, pred_alone)
    torch.testing.assert_close(value_in_pair, value_alone, atol=TOL.fp64.atol, rtol=TOL.fp64.rtol)
    assert float(DistillationLoss({}, 0.0, 1.0)(model, batch, pred)) == 0.0
