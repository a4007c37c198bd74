"""Applying a precision policy: dtypes at every boundary, autocast regions, hooks, calculator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.md.calculator import EquiforceCalculator
from equiforce.precision import MODES, apply_policy, current_policy, from_name, op_class
from equiforce.precision.apply import precision_scope
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.workflows.precision_audit import SYMMETRY_RTOL

BUILDERS = {"mace": tiny_mace, "allegro": tiny_allegro}


def _batch(model, atoms_list) -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in atoms_list
    ]
    return collate(graphs)


def _arithmetic(mode: str) -> str:
    policy = MODES[mode]
    return policy.model_dtype if policy.autocast == "none" else policy.autocast


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request) -> str:
    return request.param


@pytest.mark.parametrize("mode", list(MODES))
def test_every_output_has_its_documented_dtype(family, mode):
    model = apply_policy(BUILDERS[family](), from_name(mode))
    seen = {}
    model.energy_model.register_forward_pre_hook(
        lambda module, args: seen.update(edge_vec=args[0][keys.EDGE_VEC].dtype)
    )
    out = model(_batch(model, [make_fcc_cu(2), make_molecule()]), compute_stress=True)
    assert seen["edge_vec"] == torch.float64  # geometry boundary: vectors formed in float64
    for name in (keys.ENERGY, keys.NODE_ENERGY, keys.FORCES, keys.STRESS, keys.VIRIAL):
        assert out[name].dtype == torch.float64, name
    assert out["node_features"].dtype == MODES[mode].torch_dtype
    assert {p.dtype for p in model.parameters()} == {MODES[mode].torch_dtype}


@pytest.mark.parametrize("mode", ["float32", "bf16-mixed", "fp16-mixed"])
def test_modes_stay_within_their_named_tolerance_of_float64(family, mode):
    reference = BUILDERS[family]()
    batch = _batch(reference, [make_fcc_cu(2), make_molecule()])
    expected = reference(batch)[keys.FORCES].detach()
    got = apply_policy(copy.deepcopy(reference), from_name(mode))(batch)[keys.FORCES].detach()
    relative = float((got - expected).square().mean().sqrt() / expected.square().mean().sqrt())
    assert relative <= SYMMETRY_RTOL[_arithmetic(mode)]
    if mode != "float32":
        assert relative > SYMMETRY_RTOL["float32"]  # the low-precision region really ran


def _autocast_state(record: dict, name: str):
    def hook(module, args):
        record[name] = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    return hook


def test_only_the_chosen_op_classes_run_in_low_precision(family):
    model = apply_policy(BUILDERS[family](), from_name("bf16-mixed"))
    record: dict[str, torch.dtype | None] = {}
    for name, module in model.named_modules():
        module.register_forward_pre_hook(_autocast_state(record, name))
    model(_batch(model, [make_molecule()]))
    for name, module in model.named_modules():
        kind = op_class(module)
        if kind == "mlp":
            assert record[name] == torch.bfloat16, name
        elif kind == "linear" and getattr(module, "math_dtype", None) is not None:
            assert module.math_dtype == torch.bfloat16, name
        elif kind == "linear":
            assert record[name] == torch.bfloat16, name
        elif kind == "tensor_product":
            assert getattr(module, "math_dtype", None) is None, name
            assert record[name] is None, name
    assert record[""] is None and record["energy_model.scale_shift"] is None
    assert any(op_class(m) == "mlp" for m in model.modules())


def test_reapplying_replaces_the_policy_and_keeps_the_state_dict_keys(family):
    model = BUILDERS[family]()
    keys_before = list(model.state_dict())
    apply_policy(model, from_name("fp16-mixed", ("linear", "mlp")))
    apply_policy(model, from_name("tf32"))
    assert current_policy(model) == MODES["tf32"]
    assert list(model.state_dict()) == keys_before
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    assert hooks == 2  # only tf32's matmul-precision pair on the root
    assert all(getattr(m, "math_dtype", None) is None for m in model.modules())
    apply_policy(model, from_name("float32"))
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_tf32_sets_the_matmul_precision_only_inside_the_forward_and_scope():
    model = apply_policy(tiny_mace(), from_name("tf32"))
    seen = []
    model.energy_model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.get_float32_matmul_precision())
    )
    before = torch.get_float32_matmul_precision()
    model(_batch(model, [make_molecule()]))
    assert seen == ["high"] and torch.get_float32_matmul_precision() == before
    with precision_scope(MODES["tf32"]):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


def test_tensor_products_need_an_executor_with_a_math_dtype():
    model = tiny_mace()
    executors = [m for m in model.modules() if op_class(m) == "tensor_product"]
    for executor in executors:
        if hasattr(executor, "math_dtype"):
            del executor.math_dtype
    with pytest.raises(ValueError, match="math_dtype"):
        apply_policy(model, from_name("bf16-mixed", ("tensor_product",)))
    assert executors


def test_calculator_runs_a_saved_model_in_any_mode_without_touching_it():
    model = tiny_mace()
    atoms = make_molecule()
    reference = EquiforceCalculator(model).get_forces(atoms)
    calculator = EquiforceCalculator(model, precision="bf16-mixed")
    forces = calculator.get_forces(atoms.copy())
    assert calculator.model.dtype == torch.float32
    assert current_policy(calculator.model) == MODES["bf16-mixed"]
    assert model.dtype == torch.float64 and current_policy(model) is None
    relative = np.sqrt(np.mean((forces - reference) ** 2) / np.mean(reference**2))
    assert relative <= SYMMETRY_RTOL["bf16"]
    with pytest.raises(ValueError, match="not both"):
        EquiforceCalculator(model, dtype="float32", precision="float32")
