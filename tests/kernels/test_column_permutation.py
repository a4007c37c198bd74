"""``column_permutation``: the e3nn <-> channel-last layout change as one permutation."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from equiforce.kernels.column_permutation import channel_last_permutation, permute_columns
from equiforce.o3 import Irreps

IRREPS = Irreps("3x0e+3x1o+3x2e")


def _channel_last_by_blocks(x: torch.Tensor, irreps: Irreps) -> torch.Tensor:
    """The layout change written out block by block: (n, sum mul * dim) -> (n, sum dim, mul)."""
    blocks = x.split([mul * ir.dim for mul, ir in irreps], dim=1)
    return torch.cat(
        [
            b.reshape(x.shape[0], mul, ir.dim).transpose(1, 2)
            for b, (mul, ir) in zip(blocks, irreps, strict=True)
        ],
        dim=1,
    )


def test_the_permutation_is_the_channel_last_layout_and_the_inverse_undoes_it():
    x = torch.randn(4, IRREPS.dim, dtype=torch.float64)
    perm, inverse = channel_last_permutation(IRREPS)
    y = permute_columns(x, perm, inverse)
    assert torch.equal(y.view(4, -1, 3), _channel_last_by_blocks(x, IRREPS))
    assert torch.equal(permute_columns(y, inverse, perm), x)


def test_derivatives_of_every_order_pass_gradcheck():
    perm, inverse = channel_last_permutation(IRREPS)
    x = torch.randn(3, IRREPS.dim, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(IRREPS.dim, dtype=torch.float64)

    def f(x):  # nonlinear, so that second derivatives are not zero
        return (permute_columns(x, perm, inverse) * weight) ** 3

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_force_style_double_backward_equals_the_block_layout():
    perm, inverse = channel_last_permutation(IRREPS)
    weight = torch.randn(IRREPS.dim, dtype=torch.float64)
    grads = []
    for layout in (
        lambda x: permute_columns(x, perm, inverse),
        lambda x: _channel_last_by_blocks(x, IRREPS).reshape(x.shape[0], -1),
    ):
        x = torch.randn(
            5, IRREPS.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        x.requires_grad_()
        w = weight.clone().requires_grad_()
        energy = (torch.sin(layout(x)) * w).sum()
        (force,) = torch.autograd.grad(energy, x, create_graph=True)
        grads.append(torch.autograd.grad((force**2).sum(), (x, w)))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_traced_it_is_a_plain_index_select():
    perm, inverse = channel_last_permutation(IRREPS)
    graph = make_fx(permute_columns, tracing_mode="symbolic")(
        torch.randn(2, IRREPS.dim), perm, inverse
    )
    targets = {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}
    assert targets == {"aten.index_select.default"}


def test_blocks_of_different_multiplicities_are_refused():
    with pytest.raises(ValueError, match="one multiplicity"):
        channel_last_permutation(Irreps("2x0e+3x1o"))
