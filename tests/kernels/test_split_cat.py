"""``kernels.split_cat.cat`` (a C++ cat whose backward is one split): values and derivatives
of every order equal ``torch.cat``'s, inputs without grad included, and what it leaves to
``torch.cat`` (no grad, tracing)."""

import pytest
import torch

from equiforce.kernels import split_cat
from equiforce.kernels.extension import kernel_ops

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")


def _blocks(requires_grad=(True, False, True)):
    g = torch.Generator().manual_seed(5)
    widths = (2, 3, 4)
    return [
        torch.randn(6, w, 2, generator=g, dtype=torch.float64).requires_grad_(r)
        for w, r in zip(widths, requires_grad, strict=True)
    ]


@pytest.mark.parametrize("dim", [1, -2])
def test_values_and_three_orders_of_derivatives_equal_torch_cat(dim):
    blocks = _blocks()
    wanted = [b for b in blocks if b.requires_grad]
    ours, ref = split_cat.cat(blocks, dim), torch.cat(blocks, dim=dim)
    assert "SplitCat" in ours.grad_fn.name()
    assert torch.equal(ours, ref)
    weight = torch.randn_like(ref)
    results = []
    for out in (ours, ref):
        first = torch.autograd.grad((weight * out**3).sum(), wanted, create_graph=True)
        second = torch.autograd.grad(sum((f**2).sum() for f in first), wanted, create_graph=True)
        third = torch.autograd.grad(sum((s**3).sum() for s in second), wanted)
        results.append([*first, *second, *third])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_gradcheck_gradgradcheck():
    blocks = [b.detach().requires_grad_() for b in _blocks()]
    assert torch.autograd.gradcheck(lambda *b: split_cat.cat(b, 1), blocks)
    assert torch.autograd.gradgradcheck(lambda *b: split_cat.cat(b, 1) ** 2, blocks)


def test_without_grad_and_under_tracing_it_is_torch_cat():
    blocks = _blocks((False, False, False))
    assert split_cat.cat(blocks, 1).grad_fn is None
    with torch.no_grad():
        assert split_cat.cat(_blocks(), 1).grad_fn is None
    traced = torch.fx.experimental.proxy_tensor.make_fx(lambda a, b: split_cat.cat([a, b], 1))
    graph = traced(*_blocks((True, True, False))[:2])
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.aten.cat.default]
