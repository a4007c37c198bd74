"""The parameter backward of a force loss: equal gradients, no work for the positions.

``train.step.parameter_backward`` runs ``loss.backward(inputs=parameters)``; the custom
backwards (``kernels.backward_needs``) then skip the gradients that lead only to the
positions. The parameter gradients must equal a plain ``backward()``'s, and the edge
convolution's coupling gradient (``edge_s``, a function of the edge vectors alone) must not be
computed at all in that pass.
"""

from __future__ import annotations

import pytest
import torch

from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import edge_ops, use_backend
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


def _gradients(model, batch, backward, monkeypatch) -> tuple[list[torch.Tensor], int]:
    """Parameter gradients of the force loss and the ``edge_s`` calls of its backward."""
    model.zero_grad(set_to_none=True)
    out = model(batch, compute_forces=True, create_graph=True)
    loss = step_loss(out["energy"], out["forces"])
    calls = []
    counted = edge_ops.edge_s

    def edge_s(*args):
        calls.append(1)
        return counted(*args)

    with monkeypatch.context() as patch:
        patch.setattr(edge_ops, "edge_s", edge_s)
        backward(loss, list(model.parameters()))
    return [p.grad.clone() for p in model.parameters()], len(calls)


def test_parameter_backward_equals_backward_and_skips_position_gradients(batch, monkeypatch):
    model = use_backend(tiny_mace(torch.float64, correlation=3, seed=4), "fast").train()
    want, plain_calls = _gradients(model, batch, lambda loss, _: loss.backward(), monkeypatch)
    got, calls = _gradients(model, batch, parameter_backward, monkeypatch)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12 * max(1.0, float(w.abs().max())))
    assert plain_calls > 0  # the coupling's gradient, for the positions
    assert calls == 0
