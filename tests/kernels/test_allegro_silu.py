"""The C++ SiLU of Allegro's MLPs (kernels/allegro_silu): values, first and second derivatives
equal torch's silu in float64, and the Allegro force-loss parameter gradients equal torch's."""

import pytest
import torch

from equiforce.kernels.allegro_silu import silu, silu_kernels

pytestmark = pytest.mark.skipif(silu_kernels() is None, reason="no C++ compiler")


def _x(shape=(40, 6)):
    g = torch.Generator().manual_seed(3)
    return (4.0 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()


def test_values_and_derivatives_equal_torch():
    x = _x()
    ours, ref = silu(x), torch.nn.functional.silu(x)
    assert "::Silu>" in ours.grad_fn.name()  # the C++ node, not SiluBackward0
    assert torch.allclose(ours, ref, rtol=0, atol=1e-14)
    w = torch.randn_like(x)
    g1 = torch.autograd.grad((w * ours**2).sum(), x, create_graph=True)[0]
    g2 = torch.autograd.grad((w * ref**2).sum(), x, create_graph=True)[0]
    assert torch.allclose(g1, g2, rtol=0, atol=1e-10)
    h1 = torch.autograd.grad((g1**2).sum(), x)[0]
    h2 = torch.autograd.grad((g2**2).sum(), x)[0]
    assert torch.allclose(h1, h2, rtol=0, atol=1e-10)


def test_gradcheck_gradgradcheck():
    x = _x((7, 3))
    assert torch.autograd.gradcheck(silu, (x,))
    assert torch.autograd.gradgradcheck(silu, (x,))


def test_third_derivative_equals_torch():
    """A Hessian-vector loss (distillation) differentiates the double backward once more."""
    x, w = _x((30, 4)), torch.randn(30, 4, dtype=torch.float64)
    thirds = []
    for f in (silu, torch.nn.functional.silu):
        g = torch.autograd.grad((w * f(x)).sum(), x, create_graph=True)[0]
        h = torch.autograd.grad((w * g**2).sum(), x, create_graph=True)[0]
        thirds.append(torch.autograd.grad((h**2).sum(), x)[0])
    assert torch.allclose(thirds[0], thirds[1], rtol=0, atol=1e-10)
    assert thirds[0].abs().max() > 1e-3


def test_plain_torch_without_grad_or_in_float32_graph_free_calls():
    x = _x().detach()
    assert silu(x).grad_fn is None
    assert torch.equal(silu(x), torch.nn.functional.silu(x))


def test_allegro_force_loss_gradients_equal_torch_silu(monkeypatch):
    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
    from equiforce.models.presets import preset_potential
    from equiforce.nn.allegro import mlp
    from equiforce.workflows.bench.systems import make_system

    potential = preset_potential("allegro-tiny", "float64", 0).train()
    graphs = [
        configuration_to_graph(atoms_to_configuration(a, "m"), potential.type_names, 5.0)
        for a in make_system("batch2", 0)
    ]
    batch = collate(graphs)

    def force_loss_grads():
        potential.zero_grad(set_to_none=True)
        out = potential(batch, compute_forces=True, create_graph=True)
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2
        loss.backward()
        return out, {n: p.grad.clone() for n, p in potential.named_parameters()}

    ours, grads = force_loss_grads()
    monkeypatch.setitem(mlp.NONLINEARITIES, "silu", torch.nn.functional.silu)
    ref, ref_grads = force_loss_grads()
    assert torch.allclose(ours["energy"], ref["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(ours["forces"], ref["forces"], rtol=0, atol=1e-10)
    for name, grad in grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=1e-10, atol=1e-10), name
