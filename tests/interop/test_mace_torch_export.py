"""``to_mace_torch``: equiforce -> mace-torch -> equiforce is exact; mace-torch agrees.

Runs in the environment with mace-torch (``.venv-mace``, ``make test-interop-mace``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("mace.modules")

from equiforce.data import keys  # noqa: E402
from equiforce.data.batch import collate  # noqa: E402
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph  # noqa: E402
from equiforce.interop import from_mace_torch, to_mace_torch  # noqa: E402
from equiforce.interop.default_dtype import default_dtype  # noqa: E402
from equiforce.testing.models import tiny_mace  # noqa: E402
from equiforce.testing.structures import (  # noqa: E402
    make_periodic_hco,
    peer_parity_structures,
    squeezed,
)
from equiforce.testing.tolerances import TOL  # noqa: E402
from equiforce.workflows.bench.peers import mace_call  # noqa: E402

TYPE_NAMES = ("H", "C", "O")


def _model(dtype: torch.dtype = torch.float64, **overrides):
    """A tiny random MACE whose weights all carry extra noise (no structure hides errors)."""
    options = {
        "type_names": TYPE_NAMES,
        "correlation": 3,
        "atomic_energies": (-1.5, -2.5, -3.5),
        "avg_num_neighbors": 6.0,
        "scale": 1.3,
        "shift": -0.2,
        **overrides,
    }
    model = tiny_mace(dtype, **options)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.3 * noise)
    return model


def _batch(structures) -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), TYPE_NAMES, 4.0) for a in structures
    ]
    return collate(graphs)


def _assert_round_trip(model) -> None:
    back = from_mace_torch(to_mace_torch(model))
    assert back.spec == dataclasses.replace(model.spec, seed=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, **TOL.fp64.__dict__, msg=name)


def _assert_mace_agrees(model, tolerance) -> None:
    batch = _batch(peer_parity_structures() + [make_periodic_hco(4)])
    energy, forces = mace_call(model, batch, "inference")()
    ours = model(batch, compute_forces=True)
    assert ours[keys.FORCES].abs().max() > 0.1  # a wrong weight would show
    torch.testing.assert_close(energy.double(), ours[keys.ENERGY], **tolerance.__dict__)
    torch.testing.assert_close(forces.double(), ours[keys.FORCES], **tolerance.__dict__)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"max_L": 2, "first_interaction_residual": False},
        {"num_interactions": 1, "max_L": 0},
        {"distance_transform": "agnesi", "agnesi": (1.1, 4.2, 0.9)},
        {"apply_cutoff": False},
        {"density_normalization": True, "distance_transform": "agnesi"},  # ZBL: its own test
        {"nonlinear_interactions": "all", "apply_cutoff": False},
        {
            "nonlinear_interactions": "later",
            "apply_cutoff": False,
            "edge_irreps": "16x0e+16x1o+16x2e",
            "edge_irreps_first": True,
        },
        {"correlation": (1, 3)},
    ],
    ids=[
        "default",
        "l2-plain-first",
        "one-layer",
        "agnesi",
        "envelope-after-mlp",
        "mpa0-like",
        "nonlinear-all",
        "nonlinear-later-edge-irreps",
        "per-layer-correlation",
    ],
)
def test_round_trip_is_exact_and_mace_torch_agrees_in_float64(overrides):
    model = _model(**overrides)
    _assert_round_trip(model)
    _assert_mace_agrees(model, TOL.fp64)


def test_pair_repulsion_round_trips_and_mace_torch_agrees_on_close_contacts():
    """mace-torch's ZBL ``pair_repulsion`` (``MACESpec.pair_repulsion``) both ways: exact
    round trip, and mace-torch's energies and forces on squeezed structures, where the ZBL
    term changes every energy by more than 0.3 eV."""
    model = _model(pair_repulsion=True)
    _assert_round_trip(model)
    batch = _batch([squeezed(a) for a in peer_parity_structures() + [make_periodic_hco(4)]])
    # mace's ZBL computes k Z_i Z_j in the default dtype; as its calculator does for a
    # float64 model
    with default_dtype(torch.float64):
        energy, forces = mace_call(model, batch, "inference")()
    ours = model(batch, compute_forces=True)
    without = _model()(batch, compute_forces=True)  # the same weights, no ZBL
    assert (ours[keys.ENERGY] - without[keys.ENERGY]).abs().min() > 0.3  # eV: ZBL acts
    torch.testing.assert_close(energy.double(), ours[keys.ENERGY], **TOL.fp64.__dict__)
    torch.testing.assert_close(forces.double(), ours[keys.FORCES], **TOL.fp64.__dict__)


def test_float32_export_agrees():
    _assert_mace_agrees(_model(torch.float32), TOL.fp32)


def test_export_leaves_global_state_alone():
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    to_mace_torch(_model())
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_default_dtype() == dtype


def test_only_mace_models_export():
    from equiforce.testing.models import tiny_allegro

    with pytest.raises(ValueError, match="exports MACE models"):
        to_mace_torch(tiny_allegro())
