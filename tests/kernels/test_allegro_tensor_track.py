"""The C++ tensor-track ops of Allegro (kernels/allegro_tensor_track) against their torch
formulations: values, derivatives to third order (float64 to 1e-12), ``torch.library.opcheck``
(schema, fake, autograd) of all three operators, symbolic tracing (a trace records the
operators, as an exported package runs them), bad indices refused, and a whole Allegro's
energy, forces and force-loss parameter gradients equal with all of Allegro's C++ ops
switched off (float64 to 1e-10)."""

import pytest
import torch

from equiforce.kernels.allegro_tensor_track import _ops, environment, weighted_channels
from equiforce.kernels.extension import kernel_ops
from tests.backends import allegro_torch_ops, derivatives

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")

MUL, N_ATOMS, N_EDGES = 3, 6, 30
IRREP_OF = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2])  # 0e + 1o + 2e


def _inputs():
    """basis, weights (wider than needed: the ops get a strided view, as the model's split
    MLP outputs are) and centres."""
    g = torch.Generator().manual_seed(8)
    basis = torch.randn(N_EDGES, 9, generator=g, dtype=torch.float64).requires_grad_()
    wide = torch.randn(N_EDGES, MUL * 3 + 5, generator=g, dtype=torch.float64).requires_grad_()
    centre = torch.randint(0, N_ATOMS - 1, (N_EDGES,), generator=g)  # the last atom has none
    return basis, wide, centre


def _view(wide):
    return wide[:, 5:]  # (n_edges, mul * n_irreps), not contiguous


def _per_component(weights):
    """(dim, n_edges, mul): the weight of each basis component's irrep."""
    return weights.reshape(-1, MUL, 3).permute(2, 0, 1).index_select(0, IRREP_OF)


def _torch_weighted(basis, weights):
    return _per_component(weights) * basis.t().unsqueeze(-1)


def _torch_environment(basis, weights, centre):
    per_edge = _torch_weighted(basis, weights).permute(1, 0, 2).reshape(N_EDGES, -1)
    return per_edge.new_zeros(N_ATOMS, per_edge.shape[1]).index_add(0, centre, per_edge)


def _check(ours, ref, inputs):
    """Values, first derivatives and (create_graph) second derivatives agree."""
    torch.testing.assert_close(ours(*inputs), ref(*inputs), rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(ref(*inputs))
    firsts, seconds = [], []
    for f in (ours, ref):
        grads = torch.autograd.grad((f(*inputs) * probe).sum(), inputs, create_graph=True)
        firsts.append(grads)
        seconds.append(torch.autograd.grad(sum((g**2).sum() for g in grads), inputs))
    for got, want in zip(firsts[0] + seconds[0], firsts[1] + seconds[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    graph_free = torch.autograd.grad((ours(*inputs) * probe).sum(), inputs)
    for got, want in zip(graph_free, firsts[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ours, inputs)
    assert torch.autograd.gradgradcheck(ours, inputs)


def test_weighted_channels():
    basis, weights, _ = _inputs()
    out = weighted_channels(basis, _view(weights), IRREP_OF, MUL)
    assert out.shape == (9, N_EDGES, MUL) and out.is_contiguous()
    _check(
        lambda b, w: weighted_channels(b, _view(w), IRREP_OF, MUL),
        lambda b, w: _torch_weighted(b, _view(w)),
        (basis, weights),
    )


def test_environment():
    basis, weights, centre = _inputs()
    env = environment(basis, _view(weights), IRREP_OF, centre, MUL, N_ATOMS)
    assert env.shape == (N_ATOMS, 9 * MUL) and bool((env[-1] == 0).all())
    _check(
        lambda b, w: environment(b, _view(w), IRREP_OF, centre, MUL, N_ATOMS),
        lambda b, w: _torch_environment(b, _view(w), centre),
        (basis, weights),
    )


@pytest.mark.parametrize("op", ["weighted_channels", "environment"])
def test_third_derivatives_match_torch(op):
    """The third round differentiates the gradient operator's own autograd kernel."""
    basis, weights, centre = _inputs()
    if op == "weighted_channels":
        ours = lambda b, w: weighted_channels(b, _view(w), IRREP_OF, MUL)  # noqa: E731
        ref = lambda b, w: _torch_weighted(b, _view(w))  # noqa: E731
    else:
        ours = lambda b, w: environment(b, _view(w), IRREP_OF, centre, MUL, N_ATOMS)  # noqa: E731
        ref = lambda b, w: _torch_environment(b, _view(w), centre)  # noqa: E731
    for got, want in zip(
        derivatives(ours, (basis, weights), 3), derivatives(ref, (basis, weights), 3), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_opcheck_of_all_three_operators():
    basis, wide, centre = _inputs()
    weights = _view(wide).detach().contiguous().requires_grad_()
    pair_g = torch.randn(9, N_EDGES, MUL, dtype=torch.float64, requires_grad=True)
    atom_g = torch.randn(N_ATOMS, 9 * MUL, dtype=torch.float64, requires_grad=True)
    ops = _ops()
    torch.library.opcheck(ops.allegro_weighted_channels, (basis, weights, IRREP_OF, MUL))
    torch.library.opcheck(ops.allegro_environment, (basis, weights, IRREP_OF, centre, MUL, N_ATOMS))
    for g, rows in ((pair_g, None), (atom_g, centre)):
        args = (g, basis, weights, IRREP_OF, rows, MUL)
        torch.library.opcheck(ops.allegro_weighting_backward, args)
        assert torch.autograd.gradgradcheck(
            lambda g, b, w, rows=rows: ops.allegro_weighting_backward(g, b, w, IRREP_OF, rows, MUL),
            (g, basis, weights),
        )


def test_a_trace_records_the_operators():
    """make_fx of a force-style derivative (symbolic sizes) records the environment and its
    gradient operator, not their torch formulations: what an exported package calls."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def gradient(basis, weights, irrep_of, centre):
        basis = basis.detach().requires_grad_()
        env = environment(basis, weights, irrep_of, centre, MUL, N_ATOMS)
        return torch.autograd.grad((env**2).sum(), basis)[0]

    basis, wide, centre = _inputs()
    weights = _view(wide).detach().contiguous()
    inputs = (basis.detach(), weights, IRREP_OF, centre)
    graph = make_fx(gradient, tracing_mode="symbolic")(*inputs)
    names = {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}
    assert any("allegro_environment" in n for n in names), names
    assert any("allegro_weighting_backward" in n for n in names), names
    assert not any("index_add" in n or "index_select" in n for n in names), names
    torch.testing.assert_close(graph(*inputs), gradient(*inputs))


def test_bad_indices_are_refused():
    basis, wide, centre = _inputs()
    weights = _view(wide)
    with pytest.raises(RuntimeError, match="irrep_of\\[1\\] = 3 is not an irrep below 3"):
        weighted_channels(basis, weights, torch.tensor([0, 3, 1, 1, 2, 2, 2, 2, 2]), MUL)
    with pytest.raises(RuntimeError, match="is not an atom index below 6"):
        environment(basis, weights, IRREP_OF, torch.full_like(centre, 6), MUL, N_ATOMS)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"l_max": 2, "pair_r_max": (3.5, 4.0, 3.0, 4.0, 3.8, 3.2, 3.0, 3.2, 4.0)}],
    ids=["l1", "l2-pair-cutoffs"],
)
def test_allegro_outputs_and_force_loss_gradients_equal_torch_ops(monkeypatch, overrides):
    """Every Allegro C++ op (geometry, weighting, environment, dot product, MLPs) against the
    model with all of them replaced by their torch formulations."""
    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
    from equiforce.testing.models import tiny_allegro
    from equiforce.workflows.bench.systems import make_system

    potential = tiny_allegro(torch.float64, type_names=("H", "C", "O"), **overrides).train()
    graphs = [
        configuration_to_graph(atoms_to_configuration(a, "m"), potential.type_names, 4.0)
        for a in make_system("batch2", 0)
    ]
    batch = collate(graphs)

    def outputs_and_grads():
        potential.zero_grad(set_to_none=True)
        out = potential(batch, compute_forces=True, create_graph=True)
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2
        loss.backward()
        return out, {n: p.grad.clone() for n, p in potential.named_parameters()}

    ours, grads = outputs_and_grads()
    allegro_torch_ops(monkeypatch)
    ref, ref_grads = outputs_and_grads()
    torch.testing.assert_close(ours["energy"], ref["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(ours["forces"], ref["forces"], rtol=0, atol=1e-10)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-10, atol=1e-10, msg=name)
