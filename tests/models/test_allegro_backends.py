"""Allegro models give the same energies, forces, stress and training gradients per backend."""

from __future__ import annotations

import pytest
import torch

from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.kernels.allegro_fast import FastAllegroTensorProduct
from equiforce.kernels.extension import kernel_ops
from equiforce.testing.models import tiny_allegro
from equiforce.testing.structures import make_fcc_cu, make_molecule


def _batch(model) -> dict:
    structures = [make_fcc_cu(2, seed=1), make_molecule()]
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in structures
    ]
    return collate(graphs)


def _force_training_gradients(model, batch) -> tuple[dict, list[torch.Tensor]]:
    out = model(batch, compute_forces=True, compute_stress=True, create_graph=True)
    loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()
    return out, list(torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize("overrides", [{}, {"l_max": 2, "parity": False}, {"num_layers": 1}])
def test_fast_and_reference_models_agree_to_second_order(overrides):
    """Same weights under both backends: outputs and force-loss parameter gradients agree."""
    fast = tiny_allegro(**overrides)
    assert any(isinstance(m, FastAllegroTensorProduct) for m in fast.modules())
    reference = use_backend(tiny_allegro(**overrides), "reference")
    assert not any(isinstance(m, FastAllegroTensorProduct) for m in reference.modules())
    batch = _batch(fast)
    out_fast, grads_fast = _force_training_gradients(fast, batch)
    out_ref, grads_ref = _force_training_gradients(reference, batch)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out_fast[key], out_ref[key], rtol=1e-10, atol=1e-10)
    for got, want in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_checkpoint_moves_between_backends():
    """A reference model's state dict loads into a fast one and predicts the same."""
    reference = use_backend(tiny_allegro(seed=5), "reference")
    fast = tiny_allegro(seed=6)
    fast.load_state_dict(reference.state_dict())
    batch = _batch(fast)
    torch.testing.assert_close(
        fast(batch, create_graph=False)["forces"],
        reference(batch, create_graph=False)["forces"],
        rtol=1e-10,
        atol=1e-10,
    )


def _library_calls(model, batch) -> set[str]:
    """The kernel library's operators one energy + forces call runs (the profiler sees those
    a C++ kernel calls too)."""
    with torch.profiler.profile() as profile:
        model(batch, compute_forces=True, create_graph=False)
    names = (event.name.split("::") for event in profile.events())
    return {name[1] for name in names if name[0].startswith("equiforce_kernel_ops")}


@pytest.mark.skipif(kernel_ops() is None, reason="the kernel library does not build here")
def test_a_reference_model_runs_no_kernel_library_operator():
    """``use_backend(model, "reference")`` turns off the Allegro modules' own C++ ops
    (geometry, MLPs, tensor track) with the tensor products', and ``"fast"`` back on."""
    model = tiny_allegro().eval()
    batch = _batch(model)
    fast_calls = _library_calls(model, batch)
    own = {"allegro_geometry", "allegro_scaled_mlp", "allegro_weighted_channels"}
    assert own | {"allegro_environment", "allegro_gather_contract"} <= fast_calls
    fast_forces = model(batch, create_graph=False)["forces"]
    assert _library_calls(use_backend(model, "reference"), batch) == set()
    torch.testing.assert_close(
        model(batch, create_graph=False)["forces"], fast_forces, rtol=1e-10, atol=1e-10
    )
    assert _library_calls(use_backend(model, "fast"), batch) == fast_calls
