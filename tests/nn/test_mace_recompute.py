"""``recomputed_layer`` (one MACE layer over receiver chunks, recomputed in the backward).

A layer on a periodic box split into ~15 chunks equals the one-pass layer in float64: its
output, every first derivative (node features, edge vectors, parameters) and second
derivatives (a force-loss-like function of the edge-vector gradient). A forces call keeps no
per-edge feature tensor between forward and backward.
"""

from __future__ import annotations

import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.potential import edge_vectors
from equiforce.nn.edge_chunks import chunk_bounds
from equiforce.nn.mace.recompute import recomputed_layer
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu

TOL = 1e-10
CHUNK_EDGES = 32  # the box's 576 edges: above CHUNKED_FROM chunks' worth


def _setup():
    """Tiny MACE (correlation 3), a 32-atom Cu/Au box with shuffled edges, layer-1 inputs."""
    potential = tiny_mace(torch.float64, correlation=3, avg_num_neighbors=6.0, seed=4).eval()
    mace = potential.energy_model
    atoms = make_fcc_cu(2, seed=5)
    graph = configuration_to_graph(atoms_to_configuration(atoms), mace.type_names, mace.r_max)
    batch = collate([graph])
    order = torch.randperm(
        batch[keys.EDGE_INDEX].shape[1], generator=torch.Generator().manual_seed(1)
    )
    batch[keys.EDGE_INDEX] = batch[keys.EDGE_INDEX][:, order]
    batch[keys.EDGE_SHIFT] = batch[keys.EDGE_SHIFT][order]
    vec = edge_vectors(batch[keys.POSITIONS], batch[keys.CELL], batch).requires_grad_(True)
    n_atoms = batch[keys.ATOM_TYPE].shape[0]
    dim = mace.interactions[1].irreps.node_in.dim
    feats = torch.randn(n_atoms, dim, generator=torch.Generator().manual_seed(2))
    return mace, batch, vec, feats.double().requires_grad_(True)


def _one_pass(mace, batch, vec, feats):
    attrs, radial = mace.edge_embedding(-vec)
    message, sc = mace.interactions[1](
        feats, batch[keys.ATOM_TYPE], attrs, radial, batch[keys.EDGE_INDEX]
    )
    return mace.products[1](message, batch[keys.ATOM_TYPE], sc)


def _chunked(mace, batch, vec, feats):
    n_atoms = feats.shape[0]
    bounds = chunk_bounds(batch[keys.EDGE_INDEX], n_atoms, CHUNK_EDGES)
    assert len(bounds) > 10 and bounds.edge_order is not None
    out = recomputed_layer(
        mace.edge_embedding,
        mace.interactions[1],
        mace.products[1],
        feats,
        vec[bounds.edge_order],
        batch[keys.ATOM_TYPE],
        bounds,
    )
    return out


def _close(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    scale = max(float(want.abs().max()), 1.0)
    assert float((got - want).abs().max()) <= TOL * scale, name


def test_output_and_derivatives_of_every_order_equal_the_one_pass_layer():
    mace, batch, vec, feats = _setup()
    params = [p for m in (mace.interactions[1], mace.products[1]) for p in m.parameters()]
    results = []
    for layer in (_one_pass, _chunked):
        out = layer(mace, batch, vec, feats)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
        value = (out * probe).sum()
        only_vec = torch.autograd.grad(value, vec, retain_graph=True)  # a forces call's request
        first = torch.autograd.grad(value, [feats, vec, *params], create_graph=True)
        # a force loss: a function of the edge-vector gradient, differentiated again
        loss = (first[1] ** 2).sum() + (first[0] ** 2).sum()
        second = torch.autograd.grad(loss, [feats, vec, *params])
        results.append([out, *first, *second, *only_vec])
    assert len(results[0]) == 2 * len(params) + 6
    for index, (got, want) in enumerate(zip(results[1], results[0], strict=True)):
        _close(got, want, f"output/gradient {index}")


def test_energy_gradient_of_the_parameters_through_recomputed_chunks():
    """``energy.backward()`` in eval mode reaches the parameters (no create_graph)."""
    mace, batch, vec, feats = _setup()
    grads = []
    for layer in (_one_pass, _chunked):
        mace.zero_grad()
        layer(mace, batch, vec, feats).square().sum().backward()
        grads.append([p.grad.clone() for p in mace.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for got, want in zip(grads[1], grads[0], strict=True):
        _close(got, want, "parameter gradient")


def test_a_forces_call_keeps_no_per_edge_features_for_the_backward():
    """Saved tensors of a chunked energy: node-sized ones and the edge vectors, nothing
    with a row per edge and more than 3 columns (the one pass keeps many)."""
    mace, batch, vec, _ = _setup()
    data = dict(batch)
    data[keys.EDGE_VEC] = vec
    n_edges = vec.shape[0]

    def per_edge_features(chunk_edges):
        mace.chunk_edges = chunk_edges
        shapes = []

        def pack(tensor):
            shapes.append(tuple(tensor.shape))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            mace(data)[keys.NODE_ENERGY].sum()
        return [s for s in shapes if len(s) == 2 and s[0] >= n_edges and s[1] > 3]

    assert per_edge_features(None)
    assert per_edge_features(CHUNK_EDGES) == []
