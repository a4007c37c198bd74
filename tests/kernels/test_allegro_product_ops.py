"""Allegro's product operators (``kernels.allegro_product_ops``) against their torch
formulations: values, gradients to third order (float64 to 1e-12), ``torch.library.opcheck``
(schema, fake, autograd), symbolic tracing, thread-count independence, bad input refused; and
the fast Allegro tensor product with and without them."""

import pytest
import torch

from equiforce.kernels import allegro_fast
from equiforce.kernels.allegro_fast import FastAllegroTensorProduct
from equiforce.kernels.allegro_product_ops import _ops, gather_contract, scatter_outer
from equiforce.kernels.extension import kernel_ops
from equiforce.o3.allegro_tp import AllegroTPDescriptor, allegro_layer_irreps, tensor_track_irreps
from tests.backends import derivatives

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")

D1, D2, N_ATOMS, N_EDGES, MUL = 4, 3, 5, 23, 6


def _torch_gather_contract(x, p, centre):
    per_pair = p.index_select(0, centre).permute(1, 2, 0, 3)  # (d1, d2, n_edges, U)
    return (per_pair * x.unsqueeze(1)).sum(0)


def _torch_scatter_outer(x, y, centre, n_atoms):
    outer = (x.unsqueeze(1) * y.unsqueeze(0)).permute(2, 0, 1, 3)  # (n_edges, d1, d2, U)
    zeros = outer.new_zeros(n_atoms, x.shape[0], y.shape[0], x.shape[2])
    return zeros.index_add(0, centre, outer)


def _inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(D1, N_EDGES, MUL, generator=g, dtype=dtype).requires_grad_()
    y = torch.randn(D2, N_EDGES, MUL, generator=g, dtype=dtype).requires_grad_()
    p = torch.randn(N_ATOMS, D1, D2, MUL, generator=g, dtype=dtype).requires_grad_()
    centre = torch.randint(0, N_ATOMS - 1, (N_EDGES,), generator=g)  # last atom: no pairs
    return x, y, p, centre


@pytest.mark.parametrize("op", ["gather_contract", "scatter_outer"])
def test_values_and_derivatives_match_torch(op):
    x, y, p, centre = _inputs()
    if op == "gather_contract":
        ours, ref, inputs = gather_contract, _torch_gather_contract, (x, p)
    else:
        ours, ref, inputs = scatter_outer, _torch_scatter_outer, (x, y)
    extra = (centre,) if op == "gather_contract" else (centre, N_ATOMS)
    got = derivatives(lambda *t: ours(*t, *extra), inputs, 3)
    want = derivatives(lambda *t: ref(*t, *extra), inputs, 3)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_opcheck_and_gradcheck():
    x, y, p, centre = _inputs()
    ops = _ops()
    torch.library.opcheck(ops.allegro_gather_contract, (x, p, centre))
    torch.library.opcheck(ops.allegro_scatter_outer, (x, y, centre, N_ATOMS))
    assert torch.autograd.gradgradcheck(lambda a, b: gather_contract(a, b, centre), (x, p))
    assert torch.autograd.gradgradcheck(lambda a, b: scatter_outer(a, b, centre, N_ATOMS), (x, y))


def test_float32_and_non_contiguous_inputs():
    x, y, p, centre = _inputs(torch.float32)
    p_t = p.detach().transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    torch.testing.assert_close(
        gather_contract(x, p_t, centre), _torch_gather_contract(x, p, centre)
    )
    torch.testing.assert_close(
        scatter_outer(x, y, centre, N_ATOMS), _torch_scatter_outer(x, y, centre, N_ATOMS)
    )


def test_traced_with_symbolic_sizes():
    """make_fx of a force-style derivative records the operators with symbolic sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def energy_grad(x, p, centre):
        x = x.detach().requires_grad_()
        out = gather_contract(x, p, centre)
        return torch.autograd.grad((out**2).sum(), x)[0]

    x, _, p, centre = _inputs()
    graph = make_fx(energy_grad, tracing_mode="symbolic")(x.detach(), p.detach(), centre)
    names = {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}
    assert any("allegro_gather_contract" in n for n in names)
    torch.testing.assert_close(graph(x.detach(), p.detach(), centre), energy_grad(x, p, centre))


def test_thread_count_does_not_change_results():
    x, y, p, centre = _inputs(torch.float32, seed=3)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append((gather_contract(x, p, centre), scatter_outer(x, y, centre, N_ATOMS)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_bad_input_is_refused():
    x, y, p, centre = (t.detach() for t in _inputs())
    with pytest.raises(RuntimeError, match="centre\\[0\\] = 5 is not an atom index below 5"):
        gather_contract(x, p, torch.full_like(centre, N_ATOMS))
    with pytest.raises(RuntimeError, match="centre\\[0\\] = -1"):
        scatter_outer(x, y, torch.full_like(centre, -1), N_ATOMS)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        gather_contract(x.half(), p.half(), centre)
    with pytest.raises(RuntimeError, match="one dtype"):
        gather_contract(x, p.float(), centre)
    with pytest.raises(RuntimeError, match="p \\(n_atoms, d1, d2, U\\) expected"):
        gather_contract(x, p[:, :2], centre)


@pytest.mark.parametrize("layer", [0, 1])
def test_tensor_product_with_and_without_the_operators(layer, monkeypatch):
    """A general-mode (first of two layers) and a dot-mode (last) layer of an l_max 2 Allegro:
    output, first and second derivatives equal with the operators and with torch ops."""
    irreps_sh, _ = tensor_track_irreps(2, True)
    chain = allegro_layer_irreps(2, True, 2)
    irreps_in, irreps_out = chain[layer], chain[layer + 1]
    descriptor = AllegroTPDescriptor(irreps_in, irreps_sh, irreps_out, MUL, True)
    tp = FastAllegroTensorProduct(descriptor, torch.Generator().manual_seed(1)).double()
    assert tp.dot_mode == (layer == 1)
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(N_EDGES, MUL, irreps_in.dim, generator=g, dtype=torch.float64)
    env = torch.randn(N_ATOMS, MUL, irreps_sh.dim, generator=g, dtype=torch.float64)
    _, _, _, centre = _inputs()
    inputs = (x1.requires_grad_(), env.requires_grad_(), tp.weight)

    def call(a, b, w):
        return tp(a, b, centre)

    got = derivatives(call, inputs, 2)
    monkeypatch.setattr(allegro_fast, "kernel_ops_apply", lambda *args: False)
    want = derivatives(call, inputs, 2)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
