"""MACE evaluated in chunks of receivers equals the one-pass evaluation.

``MACE.chunk_edges`` is set tiny so that a periodic box and a batch split into several
chunks; eval mode checkpoints every chunk (recomputed in the backward pass), train mode runs
them plainly. Energies, forces, stress and the parameter gradients of a force loss (double
backward) must equal ``chunk_edges=None`` to rounding, on the fast and reference executors.
"""

from __future__ import annotations

import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.models import mace as mace_module
from equiforce.models.mace import CHUNKED_FROM
from equiforce.nn.edge_chunks import receiver_chunks
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule, make_triclinic_cu

TOL = 1e-10
CHUNK_EDGES = 40  # the batch's 720 edges: above CHUNKED_FROM chunks' worth


def _model(backend: str, **overrides) -> torch.nn.Module:
    model = tiny_mace(
        torch.float64, correlation=3, avg_num_neighbors=6.0, scale=1.3, seed=4, **overrides
    )
    return use_backend(model, backend)


@pytest.fixture(scope="module")
def batch():
    """A molecule, a triclinic Cu cell and a 32-atom fcc Cu box (~1,700 edges)."""
    names = tiny_mace().type_names
    structures = [make_molecule("CH3CH2OH", seed=1), make_triclinic_cu(seed=2), make_fcc_cu(2)]
    return collate(
        [configuration_to_graph(atoms_to_configuration(a), names, 4.0) for a in structures]
    )


def _shuffled_edges(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    order = torch.randperm(
        batch[keys.EDGE_INDEX].shape[1], generator=torch.Generator().manual_seed(0)
    )
    shuffled = dict(batch)
    shuffled[keys.EDGE_INDEX] = batch[keys.EDGE_INDEX][:, order]
    shuffled[keys.EDGE_SHIFT] = batch[keys.EDGE_SHIFT][order]
    return shuffled


def _predict(model, batch, chunk_edges, train: bool) -> dict[str, torch.Tensor]:
    """Energy, forces, stress and (train) the parameter gradients of a force + stress loss."""
    model.energy_model.chunk_edges = chunk_edges
    if chunk_edges is not None:  # the graph runs in chunks (models.mace.MACE._chunks)
        assert batch[keys.EDGE_INDEX].shape[1] > CHUNKED_FROM * chunk_edges
    model.train(train)
    model.zero_grad()
    out = model(batch, compute_forces=True, compute_stress=True, create_graph=train)
    result = {name: out[name].detach() for name in ("energy", "forces", "stress")}
    if train:
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2 + (out["stress"] ** 2).sum()
        loss.backward()
        result.update({name: p.grad.clone() for name, p in model.named_parameters()})
    return result


def _assert_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        scale = max(float(value.abs().max()), 1.0)
        assert float((got[name] - value).abs().max()) <= TOL * scale, name


def test_chunks_cover_the_graph_with_local_indices(batch):
    """Every edge lands in one chunk, in receiver order, with local rows mapping back."""
    edge_index = _shuffled_edges(batch)[keys.EDGE_INDEX]
    n_atoms = batch[keys.ATOM_TYPE].shape[0]
    chunks = receiver_chunks(edge_index, n_atoms, CHUNK_EDGES)
    assert len(chunks) > 3
    assert chunks.edge_order is not None
    receiver, sender = edge_index[:, chunks.edge_order]
    assert bool((receiver[1:] >= receiver[:-1]).all())
    assert sum(chunks.edge_sizes) == edge_index.shape[1]
    assert sum(chunks.receiver_sizes) == n_atoms
    nodes = chunks.nodes.split(chunks.node_sizes)
    start_edge, start_atom = 0, 0
    for c in range(len(chunks)):
        edges = slice(start_edge, start_edge + chunks.edge_sizes[c])
        own = torch.arange(start_atom, start_atom + chunks.receiver_sizes[c])
        rows = slice(chunks.first_rows[c], chunks.first_rows[c] + chunks.receiver_sizes[c])
        assert torch.equal(nodes[c][rows], own)
        assert torch.equal(nodes[c][chunks.receivers[c]], receiver[edges])
        assert torch.equal(nodes[c][chunks.senders[c]], sender[edges])
        assert chunks.edge_sizes[c] <= CHUNK_EDGES + int(torch.bincount(receiver).max())
        start_edge, start_atom = edges.stop, own[-1] + 1 if len(own) else start_atom
    assert receiver_chunks(batch[keys.EDGE_INDEX], n_atoms, CHUNK_EDGES).edge_order is None


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("train", [False, True], ids=["eval-checkpointed", "train-create-graph"])
def test_chunked_equals_one_pass(batch, backend, train):
    """Sorted and shuffled edges, checkpointed (eval) and plain (train) chunks."""
    model = _model(backend)
    want = _predict(model, batch, None, train)
    _assert_equal(_predict(model, batch, CHUNK_EDGES, train), want)
    _assert_equal(_predict(model, _shuffled_edges(batch), CHUNK_EDGES, train), want)


def test_chunked_equals_one_pass_with_the_zbl_repulsion(batch):
    """The pair repulsion (``MACESpec.pair_repulsion``) comes from the whole edge list before
    the chunks: shuffled edges in chunks equal one pass."""
    model = _model("fast", pair_repulsion=True)
    want = _predict(model, batch, None, False)
    without = _predict(_model("fast"), batch, None, False)["energy"]
    assert float((want["energy"] - without).abs().min()) > 1e-4  # eV: the repulsion acts
    _assert_equal(_predict(model, _shuffled_edges(batch), CHUNK_EDGES, False), want)


@pytest.mark.parametrize("train", [False, True], ids=["eval-checkpointed", "train-create-graph"])
def test_chunked_equals_one_pass_with_the_agnesi_transform(batch, train):
    """The Agnesi transform (``MACESpec.distance_transform``) needs each edge's species: the
    chunks' (checkpointed or plain) shuffled edges equal one pass."""
    model = _model("fast", distance_transform="agnesi")
    want = _predict(model, batch, None, train)
    without = _predict(_model("fast"), batch, None, False)["energy"]
    assert float((want["energy"] - without).abs().min()) > 1e-4  # eV: the transform acts
    _assert_equal(_predict(model, _shuffled_edges(batch), CHUNK_EDGES, train), want)


def test_checkpointed_force_loss_gradients(batch):
    """Eval mode with create_graph: double backward through recomputed chunks.

    The parameter gradients of a force loss equal the one-pass ones.
    """
    model = _model("fast").eval()
    grads = []
    for chunk_edges in (None, CHUNK_EDGES):
        model.energy_model.chunk_edges = chunk_edges
        model.zero_grad()
        out = model(batch, compute_forces=True, create_graph=True)
        ((out["forces"] ** 2).sum() + out["energy"].sum()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    _assert_equal(grads[1], grads[0])


def test_energy_without_gradients(batch):
    """Under ``no_grad`` the chunks run plainly."""
    model = _model("fast").eval()
    energies = []
    for chunk_edges in (None, CHUNK_EDGES):
        model.energy_model.chunk_edges = chunk_edges
        with torch.no_grad():
            energies.append(model(batch, compute_forces=False)["energy"])
    _assert_equal({"energy": energies[1]}, {"energy": energies[0]})


def _saved_bytes(model, batch) -> int:
    """Bytes of the storages the autograd graph keeps between forward and backward."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(batch, compute_forces=False)["energy"].sum()
    return sum(storages.values())


def test_checkpointing_keeps_less_for_the_backward(batch):
    """Checkpointed chunks keep their inputs only, not the per-edge intermediates."""
    model = _model("fast").eval()
    model.energy_model.chunk_edges = None
    one_pass = _saved_bytes(model, batch)
    model.energy_model.chunk_edges = CHUNK_EDGES
    assert _saved_bytes(model, batch) < 0.5 * one_pass


def test_graphs_below_sixteen_chunks_run_in_one_pass(batch):
    """Chunking starts above ``CHUNKED_FROM`` chunks' worth of edges."""
    mace = _model("fast").energy_model
    edge_index = batch[keys.EDGE_INDEX]
    n_atoms = batch[keys.ATOM_TYPE].shape[0]
    mace.chunk_edges = edge_index.shape[1] // CHUNKED_FROM
    assert mace._chunks(edge_index, n_atoms) is None
    mace.chunk_edges -= 1
    assert len(mace._chunks(edge_index, n_atoms)) > 1


def test_graphs_whose_one_pass_exceeds_the_memory_budget_run_in_chunks(batch, monkeypatch):
    """Below ``CHUNKED_FROM`` chunks' worth, a graph still chunks when its estimated one-pass
    memory exceeds ``ONE_PASS_BYTES`` (a float64 model's budget is half a float32 one's)."""
    mace = _model("fast").energy_model
    edge_index = batch[keys.EDGE_INDEX]
    n_atoms, n_edges = batch[keys.ATOM_TYPE].shape[0], edge_index.shape[1]
    mace.chunk_edges = n_edges // 4  # 4 chunks' worth: one pass by the edge count
    assert mace._chunks(edge_index, n_atoms) is None
    bytes_per_edge = mace_module.ONE_PASS_BYTES / mace.one_pass_edges()
    monkeypatch.setattr(mace_module, "ONE_PASS_BYTES", (n_edges - 1) * bytes_per_edge)
    assert mace.one_pass_edges() < n_edges
    assert len(mace._chunks(edge_index, n_atoms)) > 1
    float32 = _model("fast").energy_model.float()
    assert float32.one_pass_edges() in (2 * mace.one_pass_edges(), 2 * mace.one_pass_edges() + 1)


def test_on_a_gpu_graphs_run_in_one_pass_while_it_fits_half_the_free_memory(monkeypatch):
    """Chunks save memory, not time: on a CUDA device a graph of any number of chunks' worth
    runs in one pass while its estimated peak fits ``GPU_ONE_PASS_FRACTION`` of the device
    memory free at the call; on the CPU the edge-count rule stays."""
    mace = _model("fast").energy_model.float()
    mace.chunk_edges = 1024
    per_edge = mace_module.ONE_PASS_BYTES / mace.one_pass_edges()  # bytes of the estimate
    free = 80 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    cuda = torch.device("cuda")
    fits = int(mace_module.GPU_ONE_PASS_FRACTION * free / per_edge)
    assert abs(mace.one_pass_edges(cuda) - fits) <= 1e-5 * fits  # per_edge: rounded
    many = 100 * CHUNKED_FROM * mace.chunk_edges  # far above the CPU's edge-count rule
    assert many < 0.9 * fits
    assert mace.fits_one_pass(many, cuda)
    assert not mace.fits_one_pass(many, torch.device("cpu"))
    assert not mace.fits_one_pass(int(1.1 * fits), cuda)
    free = 2**30  # a device mostly taken by other work: chunks again
    assert not mace.fits_one_pass(many, cuda)


@pytest.mark.parametrize("train", [False, True], ids=["eval-checkpointed", "train-create-graph"])
def test_chunked_equals_one_pass_with_density_normalization(batch, train):
    """Density-normalised interactions (``MACESpec.density_normalization``) sum a density
    over each receiver's edges, from one value per bond: the chunks' shuffled edges equal one
    pass."""
    model = _model("fast", density_normalization=True, apply_cutoff=False)
    want = _predict(model, batch, None, train)
    _assert_equal(_predict(model, _shuffled_edges(batch), CHUNK_EDGES, train), want)


@pytest.mark.parametrize("train", [False, True], ids=["eval-checkpointed", "train-create-graph"])
def test_chunked_equals_one_pass_with_nonlinear_interactions(batch, train):
    """The non-linear block (``MACESpec.nonlinear_interactions``, here on ``edge_irreps``)
    embeds both ends' species and sums a density over each receiver's edges: the chunks'
    (checkpointed or plain)
    shuffled edges equal one pass (the senders' species handed to the chunks in the wrong
    order, or the density summed over the chunk's nodes wrongly, fails it)."""
    model = _model(
        "fast",
        nonlinear_interactions="all",
        apply_cutoff=False,
        edge_irreps="12x0e + 12x1o + 12x2e",
        edge_irreps_first=True,
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "embedding" in name and "edge" not in name:
                parameter.normal_(generator=torch.Generator().manual_seed(3))
    want = _predict(model, batch, None, train)
    _assert_equal(_predict(model, _shuffled_edges(batch), CHUNK_EDGES, train), want)
