"""Edges that share their weight rows (``weight_row``): the kernels read the rows in place.

Every channel-wise TP executor takes ``edge_weights`` with one row per group of edges and the
row of each edge. The result, its derivatives with respect to the node features, the edge
attributes and the shared rows, and a force-style double backward must equal the same
executor given the rows spread to one per edge; the CPU kernels' derivatives (where the
gradient of a shared row sums its edges inside ``edge_r``) must pass ``gradcheck`` and
``gradgradcheck``. Float64.
"""

from __future__ import annotations

import pytest
import torch

from equiforce.kernels import edge_ops, executor_class
from equiforce.kernels.extension import kernel_ops
from equiforce.o3 import ChannelwiseTPDescriptor, hidden_irreps, sh_irreps, tp_target_irreps
from equiforce.testing.tolerances import TOL
from tests.backends import BACKEND_PARAMS

SH = sh_irreps(2)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _case(n_nodes: int = 6, n_rows: int = 9, channels: int = 5):
    """A TP descriptor and inputs where rows are shared by 1-3 edges and one row by none."""
    hidden = hidden_irreps(channels, 1)
    desc = ChannelwiseTPDescriptor(hidden, SH, tp_target_irreps(channels, SH))
    generator = torch.Generator().manual_seed(3)
    # rows 0..n_rows-2 used 1, 2 or 3 times, the last row unused (its gradient must be 0)
    uses = torch.randint(1, 4, (n_rows - 1,), generator=generator)
    weight_row = torch.repeat_interleave(torch.arange(n_rows - 1), uses)
    weight_row = weight_row[torch.randperm(weight_row.shape[0], generator=generator)]
    n_edges = weight_row.shape[0]
    sender = torch.randint(0, n_nodes, (n_edges,), generator=generator)
    receiver = torch.randint(0, n_nodes, (n_edges,), generator=generator)
    x = _randn(n_nodes, hidden.dim, seed=1).requires_grad_()
    attrs = _randn(n_edges, SH.dim, seed=2).requires_grad_()
    rows = _randn(n_rows, desc.weight_numel, seed=4).requires_grad_()
    return desc, x, attrs, rows, sender, receiver, weight_row


def _force_style(module, x, attrs, rows, sender, receiver, weight_row):
    """Output, its gradients, and the gradients of a loss on the input gradients."""
    out = module(x, attrs, rows, sender, receiver, weight_row)
    probe = _randn(*out.shape, seed=7)
    grads = torch.autograd.grad((out * probe).sum(), (x, attrs, rows), create_graph=True)
    loss = sum((g**2).sum() for g in grads[:2])
    second = torch.autograd.grad(loss, (x, attrs, rows))
    return [out, *grads, *second]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_shared_rows_equal_rows_spread_to_every_edge(backend):
    if backend == "fast" and kernel_ops() is None:
        pytest.skip("no C++ kernels here")
    desc, x, attrs, rows, sender, receiver, weight_row = _case()
    module = executor_class("channelwise_tp", backend)(desc)
    got = _force_style(module, x, attrs, rows, sender, receiver, weight_row)

    def spread(x, attrs, rows, sender, receiver, weight_row):
        return module(x, attrs, rows.index_select(0, weight_row), sender, receiver)

    want = _force_style(spread, x, attrs, rows, sender, receiver, weight_row)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **vars(TOL.fp64))
    assert got[3][-1].abs().max() == 0  # the unused row


@pytest.mark.skipif(kernel_ops() is None, reason="no C++ kernels here")
def test_kernels_with_shared_rows_pass_gradcheck_and_gradgradcheck():
    desc, x, attrs, rows, sender, receiver, weight_row = _case(n_nodes=4, n_rows=5, channels=3)
    module = executor_class("channelwise_tp", "fast")(desc)

    def f(x, attrs, rows):
        return module(x, attrs, rows, sender, receiver, weight_row)

    inputs = (x.detach().requires_grad_(), attrs.detach().requires_grad_(), rows.detach())
    inputs[2].requires_grad_()
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.skipif(kernel_ops() is None, reason="no C++ kernels here")
def test_a_weight_row_outside_the_weights_is_refused():
    desc, x, attrs, rows, sender, receiver, weight_row = _case()
    module = executor_class("channelwise_tp", "fast")(desc)
    bad = weight_row.clone()
    bad[0] = rows.shape[0]
    with pytest.raises(RuntimeError, match="weight_row outside 0..8"):
        module(x, attrs, rows, sender, receiver, bad)
    with pytest.raises(ValueError, match="needs n_weight_rows"):
        edge_ops.edge_graph(sender, receiver, 6, 6, module.triples, module.swapped, weight_row)
