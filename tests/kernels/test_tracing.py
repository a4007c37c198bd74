"""The fast executors trace with symbolic shapes (``make_fx``, as ``models.compile`` does).

Each executor's force-style call (output and its input gradient with ``create_graph``) is
traced once at one size; the traced graph, run at other sizes, must give eager's outputs,
first derivatives and parameter gradients of a loss on both (the double backward through
the custom ops). Float64, the fast backend's CPU kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from equiforce.kernels import executor_class
from equiforce.o3 import (
    ChannelwiseTPDescriptor,
    LinearDescriptor,
    SymmetricContractionDescriptor,
    hidden_irreps,
    sh_irreps,
    tp_target_irreps,
)
from equiforce.testing.tolerances import TOL

SH = sh_irreps(2)
N_TYPES = 3


def _randn(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _species(n: int, seed: int) -> torch.Tensor:
    """(n,) int64 species, every one present, not sorted."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator) % N_TYPES


def _linear(n: int, seed: int) -> tuple[torch.nn.Module, list]:
    hidden = hidden_irreps(6, 1)
    module = executor_class("linear", "fast")(
        LinearDescriptor(hidden, hidden, N_TYPES), torch.Generator().manual_seed(1)
    )
    return module, [_randn(n, hidden.dim, seed=seed), _species(n, seed)]


def _conv(n: int, seed: int) -> tuple[torch.nn.Module, list]:
    hidden = hidden_irreps(6, 1)
    desc = ChannelwiseTPDescriptor(hidden, SH, tp_target_irreps(6, SH))
    module = executor_class("channelwise_tp", "fast")(desc)
    n_edges = 3 * n + 1
    generator = torch.Generator().manual_seed(seed)
    receiver, _ = torch.randint(0, n, (n_edges,), generator=generator).sort()
    sender = torch.randint(0, n, (n_edges,), generator=generator)
    attrs = _randn(n_edges, SH.dim, seed=seed + 1)
    weights = _randn(n_edges, desc.weight_numel, seed=seed + 2)
    return module, [_randn(n, hidden.dim, seed=seed), attrs, weights, sender, receiver]


def _symmetric(n: int, seed: int) -> tuple[torch.nn.Module, list]:
    target = tp_target_irreps(5, SH)
    desc = SymmetricContractionDescriptor(target, hidden_irreps(5, 1), 3)
    module = executor_class("symmetric_contraction", "fast")(
        desc, N_TYPES, torch.Generator().manual_seed(1)
    )
    x = _randn(n, desc.num_channels, desc.coupling_irreps.dim, seed=seed)
    return module, [x, _species(n, seed)]


CASES: dict[str, Callable[[int, int], tuple[torch.nn.Module, list]]] = {
    "linear": _linear,
    "channelwise_tp": _conv,
    "symmetric_contraction": _symmetric,
}


def _force_style(module: torch.nn.Module, names: list[str], n_inputs: int):
    """``f(*inputs, v, *parameters) -> (y, d(y . v)/d inputs[0])`` with a graph for both."""

    def call(*flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, v = list(flat[:n_inputs]), flat[n_inputs]
        state = dict(zip(names, flat[n_inputs + 1 :], strict=True))
        inputs[0] = inputs[0].detach().requires_grad_(True)
        y = torch.func.functional_call(module, state, tuple(inputs))
        (first,) = torch.autograd.grad((y * v).sum(), inputs[0], create_graph=True)
        return y, first

    return call


def _results(call, inputs: list, v: torch.Tensor, parameters: list) -> list[torch.Tensor]:
    """Output, first derivative and parameter (and float input) gradients of a loss on both."""
    leaves = parameters + [x for x in inputs[1:] if x.is_floating_point()]
    y, first = call(*inputs, v, *parameters)
    loss = (y**2).sum() + (first**3).sum()
    return [y.detach(), first.detach(), *torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("kind", list(CASES))
def test_traced_fast_executor_matches_eager(kind):
    """Traced at 11 atoms, run at 11 and 23: outputs and all gradients equal eager's."""
    module, inputs = CASES[kind](11, seed=0)
    module = module.double()
    names = [name for name, _ in module.named_parameters()]
    parameters = [p for _, p in module.named_parameters()]
    call = _force_style(module, names, len(inputs))
    v = _randn(*module(*inputs).shape, seed=5)
    traced = make_fx(call, tracing_mode="symbolic", _allow_non_fake_inputs=True)(
        *inputs, v, *parameters
    )
    for n, seed in ((11, 0), (23, 3)):  # the traced size and another
        _, inputs = CASES[kind](n, seed)
        inputs = [x.requires_grad_(x.is_floating_point()) for x in inputs]
        v = _randn(*module(*inputs).shape, seed=5 + n)
        want = _results(call, inputs, v, parameters)
        got = _results(traced, inputs, v, parameters)
        for expected, actual in zip(want, got, strict=True):
            scale = max(expected.abs().max().item(), 1.0)
            torch.testing.assert_close(
                actual, expected, atol=TOL.fp64_grad.atol * scale, rtol=TOL.fp64_grad.rtol
            )
