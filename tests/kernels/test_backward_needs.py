"""The parameter backward of a force loss: equal gradients, no work for the positions.

``train.step.parameter_backward`` runs ``loss.backward(inputs=parameters)``; the custom
backwards (the kernel library's C++ autograd kernels, which ask the running graph task;
``kernels.backward_needs`` for Python ones) then skip the gradients that lead only to the
positions. The parameter gradients must equal a plain ``backward()``'s, and the edge
convolution's coupling gradient (``edge_s``, a function of the edge vectors alone) must not be
computed at all in that pass.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.kernels.extension import kernel_ops
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.train.step import parameter_backward
from equiforce.workflows.bench.kinds import step_loss

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ kernels here")


@pytest.fixture(scope="module")
def batch():
    names = tiny_mace().type_names
    structures = [make_molecule("CH3CH2OH", seed=1), make_fcc_cu(2)]
    return collate(
        [configuration_to_graph(atoms_to_configuration(a), names, 4.0) for a in structures]
    )


class _CountCalls(TorchDispatchMode):
    """Counts the calls of one operator (those the C++ autograd kernels make included)."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.calls = name, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func.name().endswith(self.name)
        return func(*args, **(kwargs or {}))


def _gradients(model, batch, backward) -> tuple[list[torch.Tensor], int]:
    """Parameter gradients of the force loss and the ``edge_s`` calls of its backward."""
    model.zero_grad(set_to_none=True)
    out = model(batch, compute_forces=True, create_graph=True)
    loss = step_loss(out["energy"], out["forces"])
    with _CountCalls("::cwtp_edge_s") as counter:
        backward(loss, list(model.parameters()))
    return [p.grad.clone() for p in model.parameters()], counter.calls


def test_parameter_backward_equals_backward_and_skips_position_gradients(batch):
    model = use_backend(tiny_mace(torch.float64, correlation=3, seed=4), "fast").train()
    want, plain_calls = _gradients(model, batch, lambda loss, _: loss.backward())
    got, calls = _gradients(model, batch, parameter_backward)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12 * max(1.0, float(w.abs().max())))
    assert plain_calls > 0  # the coupling's gradient, for the positions
    assert calls == 0
