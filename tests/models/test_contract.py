"""The model contract: layer-at-a-time API, halo exchange, interfaces, and ``check_model``.

Mutation cases break one promise each (float32 node energies, a wrong shape, a missing or an
undeclared output, lying metadata) and must each be caught with a message naming it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from equiforce.data import keys
from equiforce.models import (
    MODELS,
    AtomicEnergyModel,
    ModelContractError,
    ModelSpec,
    PotentialInterface,
    build_model,
    check_declaration,
    check_model,
    run_layers,
)
from equiforce.models.compile import compile_potential
from equiforce.models.contract import EDGE_ENERGY, NODE_FEATURES, POTENTIAL_METADATA
from equiforce.models.mace import MACE, MACESpec, build_mace
from equiforce.models.registry import ModelFamily, register
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu
from tests.models.halo import assert_halo_run_equals_whole, model_inputs


def _swap_spec(model, **changes) -> None:
    """Give a built potential (its energy model) a different spec, weights unchanged."""
    model.energy_model.spec = dataclasses.replace(model.spec, **changes)


def _patch_outputs(monkeypatch, model, change) -> None:
    """Make ``model``'s energy model return ``change(outputs)``."""
    energy_model = model.energy_model
    original = type(energy_model).final_outputs
    monkeypatch.setattr(
        energy_model,
        "final_outputs",
        lambda state, extra: change(original(energy_model, state, extra)),
    )


def test_declarations_of_the_families():
    mace, allegro = tiny_mace().energy_model, tiny_allegro().energy_model
    assert isinstance(mace, AtomicEnergyModel) and isinstance(allegro, AtomicEnergyModel)
    assert (mace.strictly_local, mace.num_layers, mace.message_passing_layers) == (False, 2, 2)
    assert mace.receptive_field == 2 * mace.r_max == 8.0
    assert mace.outputs == {keys.NODE_ENERGY, NODE_FEATURES}
    assert (allegro.strictly_local, allegro.num_layers, allegro.message_passing_layers) == (
        True,
        2,
        0,
    )
    assert allegro.receptive_field == allegro.r_max
    assert allegro.outputs == {keys.NODE_ENERGY, EDGE_ENERGY, NODE_FEATURES}


@pytest.mark.parametrize("make", [tiny_mace, tiny_allegro])
def test_layer_by_layer_with_identity_exchange_equals_forward(make):
    model = make().energy_model
    inputs = model_inputs(make_fcc_cu(2, seed=1), model.type_names, model.r_max)
    calls = []

    def identity(index, halo):
        calls.append((index, halo.shape[0]))
        return halo

    extra = model.outputs - {keys.NODE_ENERGY}
    reference = model(inputs, extra)
    layered = run_layers(model, inputs, identity, extra)
    assert set(layered) == set(reference) == model.outputs
    assert set(model(inputs)) == {keys.NODE_ENERGY}  # the others only when asked
    with pytest.raises(ValueError, match="has no output \\['virial'\\]"):
        model(inputs, frozenset({keys.VIRIAL}))
    for name in reference:
        torch.testing.assert_close(layered[name], reference[name], rtol=1e-12, atol=1e-12)
    n_atoms = inputs[keys.ATOM_TYPE].shape[0]
    expected = [] if model.strictly_local else [(1, n_atoms)]
    assert calls == expected


def test_chunked_mace_layer_by_layer_and_with_halo_exchange_is_exact():
    model = tiny_mace().energy_model
    atoms = make_fcc_cu(3, seed=2)
    inputs = model_inputs(atoms, model.type_names, model.r_max)
    unchunked = model(inputs)[keys.NODE_ENERGY]
    model.chunk_edges = inputs[keys.EDGE_INDEX].shape[1] // 16
    assert model.initial_state(inputs).private["chunks"] is not None
    layered = run_layers(model, inputs, lambda index, halo: halo)[keys.NODE_ENERGY]
    torch.testing.assert_close(layered, unchunked, rtol=1e-12, atol=1e-12)
    model.chunk_edges = 16  # the domain's smaller graph is chunked too
    assert_halo_run_equals_whole(model, atoms)


def test_three_layer_mace_needs_two_exchanges():
    model = tiny_mace(num_interactions=3).energy_model
    assert model.receptive_field == 12.0
    assert_halo_run_equals_whole(model, make_fcc_cu(2, seed=3))


def test_potentials_and_compiled_potentials_satisfy_the_interface():
    model = tiny_mace()
    compiled = compile_potential(model, backend="aot_eager")
    assert set(POTENTIAL_METADATA) == {
        "device",
        "dtype",
        "energy_model",
        "family",
        "r_max",
        "spec",
        "spec_dict",
        "type_names",
    }
    for potential in (model, compiled):
        assert isinstance(potential, PotentialInterface)
        check_declaration(potential)
    for name in POTENTIAL_METADATA:
        if name != "spec_dict":
            assert getattr(compiled, name) == getattr(model, name), name
    assert compiled.spec_dict() == model.spec_dict()
    with pytest.raises(AttributeError):
        compiled.not_a_member  # noqa: B018 (delegation covers the interface only)


def test_float32_node_energies_are_caught(monkeypatch):
    model = tiny_mace()
    _patch_outputs(
        monkeypatch, model, lambda out: {**out, keys.NODE_ENERGY: out[keys.NODE_ENERGY].float()}
    )
    with pytest.raises(ModelContractError, match="float64"):
        check_model(model)


def test_a_wrong_shape_is_caught(monkeypatch):
    model = tiny_allegro()
    _patch_outputs(monkeypatch, model, lambda out: {**out, EDGE_ENERGY: out[EDGE_ENERGY][1:]})
    with pytest.raises(ModelContractError, match=r"edge_energy has shape \(\d+,\), expected"):
        check_model(model)


def test_a_missing_declared_output_is_caught(monkeypatch):
    model = tiny_allegro()
    _patch_outputs(
        monkeypatch, model, lambda out: {k: v for k, v in out.items() if k != NODE_FEATURES}
    )
    with pytest.raises(ModelContractError, match="'node_features' is missing"):
        check_model(model)


def test_an_undeclared_output_is_caught(monkeypatch):
    model = tiny_mace()
    _patch_outputs(monkeypatch, model, lambda out: {**out, "node_charges": out[keys.NODE_ENERGY]})
    with pytest.raises(ModelContractError, match="'node_charges' is not declared"):
        check_model(model)


def test_lying_atomic_energies_are_caught():
    model = tiny_mace()
    spec = model.spec
    object.__setattr__(spec, "atomic_energies", (1.0, 2.0))  # bypasses the spec's own check
    with pytest.raises(ModelContractError, match="atomic_energies has 2 entries for 5 types"):
        check_declaration(model)


def test_a_false_strictly_local_claim_is_caught(monkeypatch):
    model = tiny_mace()
    monkeypatch.setattr(MACE, "strictly_local", True)
    with pytest.raises(ModelContractError, match="declares strictly_local"):
        check_model(model)


def test_a_too_small_declared_r_max_is_caught():
    model = tiny_mace()  # its radial basis and envelope end at 4 Å
    _swap_spec(model, r_max=3.0)
    with pytest.raises(ModelContractError, match="real cutoff is larger"):
        check_model(model)


def test_more_species_than_the_model_has_are_caught():
    model = tiny_allegro()
    _swap_spec(model, type_names=(*model.type_names, "Fe"), atomic_energies=())
    with pytest.raises(ModelContractError, match="running it on check_batch failed"):
        check_model(model)


def test_build_model_checks_the_declarations(monkeypatch):
    def lying_build(spec: MACESpec) -> MACE:
        return build_mace(dataclasses.replace(spec, r_max=spec.r_max + 1.0))

    monkeypatch.setitem(MODELS, "mace", ModelFamily("mace", MACESpec, lying_build))
    with pytest.raises(ModelContractError, match=r"spec differs from the one asked in \['r_max'\]"):
        build_model("mace", tiny_mace().spec)


def test_families_register_a_model_spec():
    @dataclasses.dataclass(frozen=True)
    class LooseSpec:
        type_names: tuple[str, ...]

    with pytest.raises(TypeError, match="must extend ModelSpec"):
        register("loose", LooseSpec, build_mace)
    assert "loose" not in MODELS


def test_spec_base_holds_the_common_fields_and_checks():
    common = {f.name for f in dataclasses.fields(ModelSpec)}
    assert common == {
        "type_names",
        "r_max",
        "avg_num_neighbors",
        "atomic_energies",
        "scale",
        "shift",
        "dtype",
        "seed",
        "pair_repulsion",
        "pair_repulsion_form",
    }
    spec = MACESpec(["H", "C"], r_max=4, atomic_energies=[-1, -2], radial_mlp=[8])
    assert spec.type_names == ("H", "C") and spec.atomic_energies == (-1.0, -2.0)
    assert spec.radial_mlp == (8,) and spec.torch_dtype == torch.float64
    with pytest.raises(TypeError):
        MACESpec(("H",), 5.0)  # only type_names is positional
    with pytest.raises(ValueError, match="r_max .*; seed .*; dtype"):
        MACESpec(("H",), r_max=0.0, seed=-1, dtype="half")
