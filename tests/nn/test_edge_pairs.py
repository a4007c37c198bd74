"""Edges paired with their reverses, and MACE with its radial MLP once per bond.

``edge_pairs`` must put exactly ``(i, j, S)`` and ``(j, i, -S)`` together (an atom's own
periodic images included), leave a half list alone (``bond_pairs``, which an exported
package's loader uses, pairs every list: a half list's edges are their own pairs, a small
molecule's reverses are paired), and MACE evaluated with pairs (found, or carried by the
batch as ``PAIR_INPUTS``) must equal
MACE evaluated per edge: energies, forces, stress and the parameter gradients of a force
loss (double backward), float64 to 1e-10. Per-edge gradients are asked of the model without
pairs (they would differ), so they too equal the per-edge evaluation's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.kernels.extension import kernel_ops
from equiforce.models import potential as potential_module
from equiforce.nn import edge_pairs as edge_pairs_module
from equiforce.nn.edge_pairs import bond_pairs, edge_pairs, pair_inputs
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule, make_triclinic_cu

TOL = 1e-10


def _graph(atoms, r_max: float) -> dict[str, torch.Tensor]:
    return configuration_to_graph(atoms_to_configuration(atoms), tiny_mace().type_names, r_max)


@pytest.fixture(scope="module")
def batch():
    """A molecule, a triclinic Cu cell and a 32-atom fcc Cu box, collated."""
    structures = [make_molecule("CH3CH2OH", seed=1), make_triclinic_cu(seed=2), make_fcc_cu(2)]
    return collate([_graph(a, 4.0) for a in structures])


def _edge_keys(graph: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    (i, j), shift = graph[keys.EDGE_INDEX].tolist(), graph[keys.EDGE_SHIFT].long().tolist()
    return [(a, b, *s) for a, b, s in zip(i, j, shift, strict=True)]


@pytest.mark.parametrize(
    "atoms, cutoff",
    [(make_fcc_cu(2), 4.0), (make_triclinic_cu(seed=2), 7.5)],
    ids=["fcc", "own-images"],
)
def test_each_pair_is_an_edge_and_its_reverse(atoms, cutoff):
    """Every pair holds (i, j, S) and (j, i, -S); at 7.5 Å the triclinic cell's atoms see
    their own images (i, i, S) and (i, i, -S)."""
    graph = _graph(atoms, cutoff)
    pairs = edge_pairs(graph[keys.EDGE_INDEX], graph[keys.EDGE_SHIFT])
    assert pairs is not None
    edges = _edge_keys(graph)
    if cutoff > 5:
        assert any(e[0] == e[1] for e in edges)
    assert 2 * pairs.first.shape[0] == len(edges)
    members: dict[int, list[int]] = {}
    for edge, pair in enumerate(pairs.of_edge.tolist()):
        members.setdefault(pair, []).append(edge)
    for pair, (a, b) in members.items():
        i, j, *shift = edges[a]
        assert edges[b] == (j, i, *(-s for s in shift))
        assert int(pairs.first[pair]) == a
    (i, j), cell = graph[keys.EDGE_INDEX], graph[keys.CELL][0]
    pos = graph[keys.POSITIONS]
    vec = pos[j] - pos[i] + graph[keys.EDGE_SHIFT] @ cell
    second = torch.tensor([members[pair][1] for pair in range(len(members))])
    torch.testing.assert_close(vec[pairs.first], -vec[second], rtol=0, atol=1e-12)


def test_a_half_list_is_not_paired():
    """Without reverses nothing would be saved, nor on a small graph: None, the caller runs
    per edge."""
    graph = _graph(make_fcc_cu(2), 4.0)
    edge_index, shift = graph[keys.EDGE_INDEX], graph[keys.EDGE_SHIFT]
    pairs = edge_pairs(edge_index, shift)
    half = pairs.first
    assert edge_pairs(edge_index[:, half], shift[half]) is None
    few = pairs.of_edge < 4  # a full list of 4 bonds, 8 edges
    assert int(few.sum()) == 8 and edge_pairs(edge_index[:, few], shift[few]) is None
    assert edge_pairs(edge_index[:, :0], shift[:0]) is None


def _predict(model, batch, train: bool, edge_gradients: bool) -> dict[str, torch.Tensor]:
    model.train(train)
    model.zero_grad()
    out = model(
        batch,
        compute_forces=True,
        compute_stress=True,
        create_graph=train,
        compute_edge_gradients=edge_gradients,
    )
    names = ("energy", "forces", "stress") + (("edge_gradient",) if edge_gradients else ())
    result = {name: out[name].detach() for name in names}
    if train:
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2 + (out["stress"] ** 2).sum()
        loss.backward()
        result.update({name: p.grad.clone() for name, p in model.named_parameters()})
    return result


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize(
    "train, edge_gradients",
    [(False, False), (True, False), (False, True)],
    ids=["inference", "training", "edge-gradients"],
)
def test_mace_with_pairs_equals_mace_per_edge(batch, backend, train, edge_gradients, monkeypatch):
    model = use_backend(tiny_mace(torch.float64, correlation=3, seed=4), backend)
    calls = []

    def recorded(*args):
        calls.append(edge_pairs(*args))
        return calls[-1]

    monkeypatch.setattr(potential_module, "edge_pairs", recorded)
    got = _predict(model, batch, train, edge_gradients)
    if edge_gradients:
        assert not calls
    else:
        assert calls and calls[-1] is not None
    model.pair_edges = False
    want = _predict(model, batch, train, edge_gradients)
    assert len(calls) == (0 if edge_gradients else 1)
    assert got.keys() == want.keys()
    for name, value in want.items():
        scale = max(float(value.abs().max()), 1.0)
        assert float((got[name] - value).abs().max()) <= TOL * scale, name


def test_bond_pairs_pair_every_list():
    """``bond_pairs`` pairs a molecule as ``edge_pairs`` pairs a large list, and a half list's
    edges each with itself."""
    small = _graph(make_molecule("CH3CH2OH", seed=1), 4.0)
    edges = _edge_keys(small)
    pairs = bond_pairs(small[keys.EDGE_INDEX], small[keys.EDGE_SHIFT])
    assert 2 * pairs.first.shape[0] == len(edges)
    for edge, pair in enumerate(pairs.of_edge.tolist()):
        i, j, *shift = edges[int(pairs.first[pair])]
        assert edges[edge] in {(i, j, *shift), (j, i, *(-s for s in shift))}
    half = pairs.first
    alone = bond_pairs(small[keys.EDGE_INDEX][:, half], small[keys.EDGE_SHIFT][half])
    assert torch.equal(alone.first, torch.arange(half.shape[0]))
    assert torch.equal(alone.of_edge, torch.arange(half.shape[0]))


def _list_variants():
    """Edge lists: periodic, own images, shuffled, a half list, integer and float32 shifts."""
    fcc = _graph(make_fcc_cu(2), 4.0)
    images = _graph(make_triclinic_cu(seed=2), 7.5)
    index, shift = images[keys.EDGE_INDEX], images[keys.EDGE_SHIFT]
    order = torch.randperm(index.shape[1], generator=torch.Generator().manual_seed(3))
    half = edge_pairs(fcc[keys.EDGE_INDEX], fcc[keys.EDGE_SHIFT]).first
    return {
        "fcc": (fcc[keys.EDGE_INDEX], fcc[keys.EDGE_SHIFT]),
        "own-images": (index, shift),
        "shuffled": (index[:, order], shift[order]),
        "half": (fcc[keys.EDGE_INDEX][:, half], fcc[keys.EDGE_SHIFT][half]),
        "int-shifts": (index, shift.round().long()),
        "float32-shifts": (index, shift.float()),
    }


@pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")
def test_the_cpp_pairs_equal_the_torch_formulation():
    """The kernel library's ``bond_pairs`` gives the torch formulation's tensors exactly, and
    None (keys past int64) and its errors where they apply."""
    operator = edge_pairs_module._library_operator()
    for name, (index, shift) in _list_variants().items():
        got = edge_pairs_module._find_pairs(index, shift, operator)
        want = edge_pairs_module._find_pairs_torch(index, shift)
        assert torch.equal(got.first, want.first) and torch.equal(got.of_edge, want.of_edge), name
    far = torch.tensor([[0, 2**29], [2**29, 0]])  # 2^58 key range times 3^3 shift codes
    shift = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    assert edge_pairs_module._find_pairs_torch(far, shift) is None
    assert edge_pairs_module._find_pairs(far, shift, operator) is None
    with pytest.raises(RuntimeError, match="negative atom index"):
        edge_pairs_module._find_pairs(torch.tensor([[0, -1], [1, 0]]), shift, operator)


def test_a_reference_backend_process_never_builds_the_kernel_library():
    """Finding the bonds leaves the library to the fast kernels: a fresh process that runs a
    reference-backend MACE (a peer's bench worker does) never asks for it."""
    script = (
        "import torch\n"
        "from equiforce.kernels import use_backend\n"
        "from equiforce.kernels.extension import kernel_ops\n"
        "from equiforce.testing import checks\n"
        "from equiforce.testing.models import tiny_mace\n"
        "from equiforce.testing.structures import make_fcc_cu\n"
        "model = use_backend(tiny_mace(torch.float64), 'reference')\n"
        "checks.predict(model, [make_fcc_cu(repeat=2)])\n"
        "assert kernel_ops.cache_info().currsize == 0, 'kernel_ops() was called'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("edge_gradients", [False, True])
def test_pairs_the_batch_carries_are_used(batch, edge_gradients, monkeypatch):
    """A batch with ``PAIR_INPUTS`` (an exported program's inputs) gives MACE those pairs,
    found by no one else, unless per-edge gradients are asked; the result equals per edge."""
    model = use_backend(tiny_mace(torch.float64, correlation=3, seed=4), "fast")
    given = []
    original = potential_module.EdgePairs

    def recorded(*args):
        given.append(original(*args))
        return given[-1]

    monkeypatch.setattr(potential_module, "EdgePairs", recorded)
    monkeypatch.setattr(potential_module, "edge_pairs", lambda *args: pytest.fail("searched"))
    got = _predict(model, {**batch, **pair_inputs(batch)}, False, edge_gradients)
    assert len(given) == 1  # built from the batch (and dropped with per-edge gradients)
    model.pair_edges = False
    want = _predict(model, batch, False, edge_gradients)
    for name, value in want.items():
        scale = max(float(value.abs().max()), 1.0)
        assert float((got[name] - value).abs().max()) <= TOL * scale, name
