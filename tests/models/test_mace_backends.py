"""MACE under every kernel backend: same state dict, same energies, forces and gradients.

``tiny_mace`` builds with ``backend="auto"`` (``fast`` on CPU), so ``test_mace_physics.py``
runs the physics suite on the fast backend; ``TestMACEPhysicsReference`` runs it again on
the reference executors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import executor_key, use_backend
from equiforce.models import load_model, save_model
from equiforce.testing import checks
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_molecule, make_triclinic_cu
from equiforce.testing.tolerances import TOL
from tests.backends import BACKEND_PARAMS
from tests.models.model_suite import ModelTestSuite


def _model(backend: str) -> torch.nn.Module:
    model = tiny_mace(torch.float64, correlation=3, avg_num_neighbors=6.0, scale=1.3, seed=4)
    return use_backend(model, backend)


def _energy_forces_and_grads(model, batch) -> dict[str, torch.Tensor]:
    """Energy, forces, and parameter gradients of a force loss (double backward)."""
    model.zero_grad()
    out = model(batch, compute_forces=True, create_graph=True)
    loss = (out["forces"] ** 2).sum() + out["energy"].sum()
    loss.backward()
    result = {"energy": out["energy"].detach(), "forces": out["forces"].detach()}
    for name, param in model.named_parameters():
        result[name] = param.grad.detach().clone()
    return result


@pytest.fixture(scope="module")
def batch():
    names = tiny_mace().type_names
    structures = [make_molecule("CH3CH2OH", seed=1), make_triclinic_cu(seed=2)]
    return collate(
        [configuration_to_graph(atoms_to_configuration(a), names, 4.0) for a in structures]
    )


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_backend_keeps_state_dict_and_agrees_with_reference(backend, batch):
    reference = _model("reference")
    other = _model(backend)
    assert list(other.state_dict()) == list(reference.state_dict())
    kinds = {executor_key(m) for m in other.modules()} - {None}
    assert kinds, "no executors found"
    expected = _energy_forces_and_grads(reference, batch)
    actual = _energy_forces_and_grads(other, batch)
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key], value, atol=TOL.fp64_grad.atol, rtol=TOL.fp64_grad.rtol, msg=key
        )


@pytest.mark.parametrize(("saved", "loaded"), [("reference", "fast"), ("fast", "reference")])
def test_model_file_saved_under_one_backend_loads_under_another(saved, loaded, batch, tmp_path):
    model = _model(saved)
    path = save_model(model, tmp_path / "model.pt")
    again = load_model(path, backend=loaded)
    assert {key[1] for key in map(executor_key, again.modules()) if key} <= {loaded, "reference"}
    expected = model(batch, compute_forces=True)
    actual = again(batch, compute_forces=True)
    for key in ("energy", "forces"):
        torch.testing.assert_close(actual[key], expected[key], atol=TOL.fp64.atol, rtol=0.0)


class TestMACEPhysicsReference(ModelTestSuite):
    """The physics suite on a MACE whose executors are the reference ones."""

    def make_model(self, dtype: torch.dtype):
        model = tiny_mace(
            dtype,
            correlation=3,
            avg_num_neighbors=6.0,
            atomic_energies=(-13.6, -1029.8, -2041.3, -1.2, -0.8),
            scale=1.7,
            shift=0.3,
            seed=1,
        )
        return use_backend(model, "reference")

    def test_save_load_round_trip(self, model64, structures, tmp_path):
        # the file carries no backend: reload on the reference executors for bit equality
        # (the default, "auto", gives the fast ones, equal to rounding)
        path = save_model(model64, tmp_path / "model.pt")
        loaded = load_model(path, backend="reference")
        for kind in ("molecule", "periodic"):
            ref = checks.predict(model64, [structures[kind]], stress=kind == "periodic")
            out = checks.predict(loaded, [structures[kind]], stress=kind == "periodic")
            for name in ref:
                np.testing.assert_array_equal(out[name], ref[name], err_msg=name)
