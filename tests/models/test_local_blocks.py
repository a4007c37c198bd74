"""Blocked inference of strictly local models equals the whole-graph pass (float64)."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.models.allegro import EDGE_ENERGY
from equiforce.models.local_blocks import BlockPlan, BlockSettings, SavedBytes
from equiforce.models.potential import NODE_FEATURES
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule, make_slab

# small blocks, so that the structures below (~10^3-10^4 edges) split into several
SMALL_BLOCKS = BlockSettings(block_bytes=2**21, probe_edges=300, min_edges=1000, no_grad_edges=700)
OUTPUTS = (
    keys.ENERGY,
    keys.NODE_ENERGY,
    keys.FORCES,
    keys.STRESS,
    keys.VIRIAL,
    keys.EDGE_GRADIENT,
    EDGE_ENERGY,
    NODE_FEATURES,
)


def _batch(model, structures) -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in structures
    ]
    return collate(graphs)


def _calls(model, batch, **options) -> tuple[dict[str, torch.Tensor], int]:
    """The model's outputs and how many times its energy model ran."""
    calls = []
    handle = model.energy_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = model(batch, **options)
    finally:
        handle.remove()
    return out, len(calls)


def _compare(model, batch, stress: bool = True, blocking: BlockSettings = SMALL_BLOCKS) -> int:
    """Assert blocked == whole-graph for every output; return the number of blocks."""
    options = {
        "compute_forces": True,
        "compute_stress": stress,
        "create_graph": False,
        "compute_edge_gradients": True,
        "extra_outputs": model.energy_model.outputs - {keys.NODE_ENERGY},
    }
    model.blocking = None
    whole, one = _calls(model, batch, **options)
    model.blocking = blocking
    blocked, n_blocks = _calls(model, batch, **options)
    assert one == 1
    assert sorted(blocked) == sorted(whole)
    for name in OUTPUTS:
        if name in whole:
            torch.testing.assert_close(blocked[name], whole[name], rtol=0, atol=1e-10)
    return n_blocks


@pytest.fixture(scope="module")
def allegro():
    """The tiny float64 Allegro of the test kit, in eval mode."""
    return tiny_allegro(torch.float64).eval()


def test_periodic_box_every_output_matches(allegro):
    """256-atom periodic box: energy, node/edge outputs, forces, stress, virial."""
    batch = _batch(allegro, [make_fcc_cu(repeat=4, seed=3)])  # 256 atoms
    assert _compare(allegro, batch) > 3


def test_the_zbl_repulsion_in_blocks_equals_the_whole_graph():
    """``AllegroSpec.pair_repulsion``: every output of a blocked call, the edge energies (its
    per-edge share) included, equals the whole graph's."""
    model = tiny_allegro(torch.float64, pair_repulsion=True).eval()
    batch = _batch(model, [make_fcc_cu(repeat=4, seed=3)])
    assert _compare(model, batch) > 3


def test_batch_of_graphs_with_mixed_pbc(allegro):
    """A bulk cell, a slab (pbc T, T, F) and a molecule in one batch."""
    structures = [make_fcc_cu(repeat=3, seed=1), make_slab(seed=2), make_molecule("C6H6")]
    batch = _batch(allegro, structures)
    assert _compare(allegro, batch) > 2


def test_one_atom_blocks_and_isolated_atoms(allegro):
    """Blocks of single centre atoms; trailing atoms without edges form edge-free blocks."""
    isolated = [Atoms("H", positions=[[0.0, 0.0, 0.0]]) for _ in range(3)]
    batch = _batch(allegro, [make_fcc_cu(repeat=2, seed=8), *isolated])
    tiny = BlockSettings(block_bytes=1, probe_edges=1, min_edges=10)
    assert _compare(allegro, batch, blocking=tiny) > 32


def test_reference_backend():
    """The plain-torch executors give the same equality."""
    model = use_backend(tiny_allegro(torch.float64), "reference").eval()
    assert _compare(model, _batch(model, [make_fcc_cu(repeat=3, seed=5)])) > 1


def test_unsorted_edges_keep_their_order(allegro):
    """Edges in random order: blocks sort them, per-edge outputs come back in input order."""
    batch = _batch(allegro, [make_fcc_cu(repeat=3, seed=4)])
    perm = torch.randperm(
        batch[keys.EDGE_INDEX].shape[1], generator=torch.Generator().manual_seed(0)
    )
    batch[keys.EDGE_INDEX] = batch[keys.EDGE_INDEX][:, perm]
    batch[keys.EDGE_SHIFT] = batch[keys.EDGE_SHIFT][perm]
    assert _compare(allegro, batch) > 1


def test_energy_only_stays_differentiable_in_parameters(allegro):
    """Without forces the blocked energy keeps its graph: same parameter gradient."""
    batch = _batch(allegro, [make_fcc_cu(repeat=3, seed=6)])
    grads = []
    for blocking in (None, SMALL_BLOCKS):
        allegro.blocking = blocking
        energy = allegro(batch, compute_forces=False, create_graph=False)[keys.ENERGY]
        weight = next(allegro.energy_model.readout.parameters())
        grads.append(torch.autograd.grad(energy.sum(), weight)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-10)


def test_training_and_mace_use_the_whole_graph(allegro):
    """create_graph (training) and a message-passing model never run in blocks."""
    batch = _batch(allegro, [make_fcc_cu(repeat=3, seed=7)])
    allegro.blocking = SMALL_BLOCKS
    _, n_calls = _calls(allegro, batch, compute_forces=True, create_graph=True)
    assert n_calls == 1
    mace = tiny_mace(torch.float64).eval()
    mace.blocking = SMALL_BLOCKS
    _, n_calls = _calls(mace, _batch(mace, [make_fcc_cu(repeat=3, seed=7)]), compute_forces=True)
    assert n_calls == 1


def test_plan_splits_edges_evenly_without_cutting_an_atom():
    """Block bounds on a hand-made edge list (atom 3 has no edges)."""
    centre = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 4, 4, 5])
    edge_index = torch.stack([centre, torch.zeros_like(centre)])
    inputs = {
        keys.EDGE_INDEX: edge_index,
        keys.EDGE_SHIFT: torch.zeros(11, 3),
        keys.ATOM_TYPE: torch.zeros(6, dtype=torch.int64),
    }
    plan = BlockPlan(inputs)
    # cuts at the first atoms whose edges start at or after edges 11 // 3 and 2 * 11 // 3
    assert plan.ranges(0, 4) == [(0, 1), (1, 3), (3, 6)]
    assert [plan.n_edges(a, b) for a, b in plan.ranges(0, 4)] == [3, 5, 3]
    assert plan.ranges(1, 100) == [(1, 6)]
    block = plan.block(1, 3)  # centres 1 and 2, their neighbour 0
    assert block.inputs[keys.EDGE_INDEX].tolist() == [[1, 2, 2, 2, 2], [0, 0, 0, 0, 0]]
    assert block.centres.tolist() == [1, 2]


def test_saved_bytes_counts_each_storage_once():
    """The probe's measure: two saves of one tensor count once."""
    x = torch.ones(1000, dtype=torch.float64, requires_grad=True)
    with SavedBytes() as saved:
        (x * x).sum()
    assert saved.nbytes == 8000
    assert BlockSettings(block_bytes=8000).edges_per_block(8.0) == 1000
