"""The C++ MLP op of Allegro (kernels/allegro_mlp) against the torch formulation
(nn.scaled_mlp): values, first, second and third derivatives of the blocks and weights (float64
to 1e-10), gradcheck/gradgradcheck, bad operands refused, and AllegroMLP's use of it. A whole
Allegro's force-loss parameter gradients with it (and Allegro's other C++ ops) against torch's:
tests/kernels/test_allegro_tensor_track.py."""

import pytest
import torch

from equiforce.kernels.allegro_mlp import scaled_mlp
from equiforce.kernels.extension import kernel_ops
from equiforce.nn.allegro.mlp import AllegroMLP
from equiforce.nn.scaled_mlp import scaled_mlp_forward

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")

# (sizes, silu): a hidden SiLU net, a deep SiLU net, a single linear layer, a deep linear map
NETS = [((12, 10, 7), True), ((12, 9, 8, 3), True), ((12, 5), False), ((12, 6, 4), False)]


def _operands(sizes, dtype=torch.float64, seed=0):
    """Two input blocks (the second a strided view, as the model's are) and the weights."""
    g = torch.Generator().manual_seed(seed)
    first = (2.0 * torch.randn(20, 8, generator=g, dtype=dtype)).requires_grad_()
    wide = (2.0 * torch.randn(20, 7, generator=g, dtype=dtype)).requires_grad_()
    weights = [
        torch.randn(a, b, generator=g, dtype=dtype).requires_grad_()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    alphas = [0.3 + 0.2 * k for k in range(len(weights))]
    return first, wide, weights, alphas


def _nets(silu, alphas, record=False):
    """(ours, torch) as functions of (block 0, block 1, *weights)."""

    def ours(a, b, *weights):
        return scaled_mlp([a, b[:, 3:]], list(weights), alphas, silu, record)

    def ref(a, b, *weights):
        scaled = [w * alpha for w, alpha in zip(weights, alphas, strict=True)]
        act = torch.nn.functional.silu if silu else None
        return scaled_mlp_forward([a, b[:, 3:]], scaled, act, None)

    return ours, ref


def _zeros_for_unused(grads, inputs):
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


@pytest.mark.parametrize("record", [False, True], ids=["one-node", "recorded"])
@pytest.mark.parametrize("sizes,silu", NETS)
def test_values_and_derivatives_equal_torch(sizes, silu, record):
    first, wide, weights, alphas = _operands(sizes)
    inputs = (first, wide, *weights)
    ours, ref = _nets(silu, alphas, record)
    y = ours(*inputs)
    assert ("ScaledMlp" in y.grad_fn.name()) != record  # the C++ node, or recorded ops
    torch.testing.assert_close(y, ref(*inputs), rtol=1e-13, atol=1e-13)
    probe = torch.randn_like(y)
    results = []
    for f in (ours, ref):
        # a force loss: the input gradient with create_graph, then every operand's gradient
        # of a function of it, then once more (a Hessian-vector loss, as distillation takes)
        firsts = torch.autograd.grad((f(*inputs) * probe).sum(), inputs, create_graph=True)
        loss = sum((g**2).sum() for g in firsts[:2])
        seconds = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
        seconds = _zeros_for_unused(seconds, inputs)
        thirds = torch.autograd.grad(sum((s**2).sum() for s in seconds), inputs, allow_unused=True)
        thirds = _zeros_for_unused(thirds, inputs)
        results.append((firsts, seconds, thirds))
    for order in range(3):
        assert max(want.abs().max() for want in results[1][order]) > 1e-3  # not vacuous
        for got, want in zip(results[0][order], results[1][order], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("record", [False, True], ids=["one-node", "recorded"])
@pytest.mark.parametrize("sizes,silu", [NETS[1], NETS[3]])
def test_gradcheck_gradgradcheck(sizes, silu, record):
    first, wide, weights, alphas = _operands(sizes)
    inputs = (first.detach()[:4].requires_grad_(), wide.detach()[:4].requires_grad_(), *weights)
    ours, _ = _nets(silu, alphas, record)
    assert torch.autograd.gradcheck(ours, inputs)
    assert torch.autograd.gradgradcheck(ours, inputs)


def test_float32_matches_float64():
    first, wide, weights, alphas = _operands(NETS[1][0])
    ours, _ = _nets(True, alphas)
    low = ours(first.float(), wide.float(), *[w.float() for w in weights])
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), ours(first, wide, *weights), rtol=1e-5, atol=1e-5)


def test_bad_operands_are_refused():
    first, wide, weights, alphas = _operands((15, 4, 2))
    with pytest.raises(RuntimeError, match="weights\\[0\\] has 15 rows, its input is 11 wide"):
        scaled_mlp([first, wide[:, 4:]], weights, alphas, True, False)
    with pytest.raises(RuntimeError, match="blocks\\[1\\] must be a CPU tensor of the first"):
        scaled_mlp([first, wide.float()], weights, alphas, True, False)
    with pytest.raises(RuntimeError, match="one alpha per weight"):
        scaled_mlp([first, wide], weights, alphas[:1], True, False)


def test_allegro_mlp_runs_the_op_and_falls_back_to_torch():
    """The op in float32/float64 (one node in eval mode, recorded in training mode, whose
    SiLU is the C++ node); under a bf16 math dtype the torch formulation (autocast's casts),
    which the op does not do."""
    net = AllegroMLP((6, 8, 3), "silu", torch.Generator().manual_seed(1)).eval()
    x = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    y = net(x)
    assert "ScaledMlp" in y.grad_fn.name()
    recorded = net.train()(x)
    assert recorded.grad_fn.name() == "MmBackward0"
    assert "Silu>" in recorded.grad_fn.next_functions[0][0].name()
    torch.testing.assert_close(recorded, y, rtol=0, atol=0)
    scaled = [w * a for w, a in zip(net.weights, net.alphas, strict=True)]
    ref = scaled_mlp_forward(x, scaled, torch.nn.functional.silu, None)
    torch.testing.assert_close(y, ref, rtol=1e-14, atol=1e-14)
    net.math_dtype = torch.bfloat16
    low = net(x)
    assert "ScaledMlp" not in low.grad_fn.name()
    torch.testing.assert_close(low, ref, rtol=0.05, atol=0.05)
