"""Coefficient buffers stay exact through dtype round trips, for every backend.

A model file saved in float32 is rebuilt in float64, moved to float32 and loaded; evaluating it
in float64 must then give float64 results for its (float32-representable) weights. Plain
buffers kept float32-rounded Clebsch-Gordan couplings and symmetric-contraction bases: the fast
backend's float64 energies were off by ~1e-8 relative and forces broke rotation equivariance
at ~3e-9 (``equiforce.kernels.constants``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from equiforce.kernels import use_backend
from equiforce.kernels.constants import ExactConstants
from equiforce.testing import checks
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from tests.backends import BACKEND_PARAMS


def _float32_weights(model):
    """``model`` with every parameter rounded to float32 (what a float32 file holds), float64."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.float32).to(torch.float64))
    return model


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("family", ["mace", "allegro"])
def test_a_float32_round_trip_leaves_float64_results_exact(family, backend):
    build = tiny_mace if family == "mace" else tiny_allegro
    overrides = {"correlation": 3} if family == "mace" else {}
    model = _float32_weights(build(torch.float64, **overrides))
    use_backend(model, backend)
    round_trip = copy.deepcopy(model).to(torch.float32).to(torch.float64)
    structures = [make_fcc_cu(repeat=1, seed=2), make_molecule("CH3CH2OH", seed=3)]
    expected, actual = checks.predict(model, structures), checks.predict(round_trip, structures)
    for key in ("energy", "forces"):
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-13, atol=1e-13, err_msg=key)
    constants = [m for m in round_trip.modules() if isinstance(m, ExactConstants)]
    assert constants, "the executors keep their coefficients as exact constants"
    for module in constants:
        for name, master in module._constant_masters.items():
            assert torch.equal(getattr(module, name), master), name


def test_constants_follow_the_module_dtype():
    model = tiny_mace(torch.float64)
    use_backend(model, "fast")
    model.to(torch.float32)
    for module in model.modules():
        if isinstance(module, ExactConstants):
            for name in module._constant_masters:
                assert getattr(module, name).dtype == torch.float32, name
