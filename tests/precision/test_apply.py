"""Applying a precision policy: dtypes at every boundary, the blocks' declared op classes and
compute dtypes, the tf32 scope, the calculator."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.md.calculator import EquiforceCalculator
from equiforce.nn.allegro.mlp import AllegroMLP
from equiforce.nn.mace.mlp import RadialMLP
from equiforce.precision import (
    MODES,
    apply_policy,
    current_policy,
    from_name,
    op_class,
    precision_scope,
)
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.workflows.precision_audit import SYMMETRY_RTOL

BUILDERS = {"mace": tiny_mace, "allegro": tiny_allegro}
HALF = (torch.bfloat16, torch.float16)
# torch functions that run a matrix product (``x @ w`` is ``Tensor.__matmul__``)
MATMULS = {
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.mm,
    torch.Tensor.mm,
    torch.bmm,
    torch.Tensor.bmm,
    torch.addmm,
    torch.baddbmm,
    torch.einsum,
    torch.tensordot,
    nn.functional.linear,
}


def _batch(model, atoms_list) -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in atoms_list
    ]
    return collate(graphs)


def _arithmetic(mode: str) -> str:
    policy = MODES[mode]
    return policy.model_dtype if policy.autocast == "none" else policy.autocast


class _MatmulRecorder(TorchFunctionMode):
    """Records, per innermost running module, the operand dtypes of every matrix product."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.stack: list[str] = []
        self.dtypes: dict[str, set[torch.dtype]] = {}
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(partial(self._enter, name)))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, name: str, module: nn.Module, args: tuple) -> None:
        self.stack.append(name)

    def _leave(self, module: nn.Module, args: tuple, output: object) -> None:
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in MATMULS and self.stack:
            operands = [a for a in (*args, *(kwargs or {}).values()) if torch.is_tensor(a)]
            found = self.dtypes.setdefault(self.stack[-1], set())
            found.update(t.dtype for t in operands if t.is_floating_point())
        return func(*args, **(kwargs or {}))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _matmul_dtypes(model: nn.Module, batch: dict) -> dict[str, set[torch.dtype]]:
    """Module name -> dtypes of the matmul operands its own code ran (forward only)."""
    recorder = _MatmulRecorder(model)
    try:
        with recorder:
            model(batch)
    finally:
        recorder.close()
    return recorder.dtypes


def _undeclared_matmul_blocks(model: nn.Module, batch: dict) -> list[str]:
    """Modules that run matmuls in the model dtype (float32) but declare no op class."""
    dtypes = _matmul_dtypes(apply_policy(model, MODES["float32"]), batch)
    modules = dict(model.named_modules())
    return [
        name
        for name, found in dtypes.items()
        if torch.float32 in found and op_class(modules[name]) is None
    ]


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
    out = model(
        _batch(model, [make_fcc_cu(2), make_molecule()]),
        compute_stress=True,
        extra_outputs=("node_features",),
    )
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
        assert relative > SYMMETRY_RTOL["float32"]  # the low-precision blocks really ran


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_every_block_that_runs_matmuls_declares_an_op_class(family, backend):
    """A new block with weights and matmuls but no ``op_class`` would silently miss bf16."""
    model = use_backend(BUILDERS[family](), backend)
    assert _undeclared_matmul_blocks(model, _batch(model, [make_molecule()])) == []


def test_the_non_linear_blocks_edge_mlps_run_in_the_mlp_precision():
    """mace-torch's MH block (``nonlinear_interactions``): its edge MLPs (species-pair tables,
    LayerNorm MLPs) are declared (op class ``mlp``, the interaction's own arithmetic), run in
    bf16 under bf16-mixed with ``mlp`` chosen and in float32 without, and its forces stay
    within bf16's tolerance of float64 (and beyond float32's: the bf16 MLPs ran)."""
    reference = tiny_mace(nonlinear_interactions="all", apply_cutoff=False)
    batch = _batch(reference, [make_fcc_cu(2), make_molecule()])
    assert _undeclared_matmul_blocks(reference, batch) == []
    interactions = [f"energy_model.interactions.{k}" for k in range(2)]
    for chosen, expected in ((("mlp",), torch.bfloat16), (("linear",), torch.float32)):
        model = apply_policy(copy.deepcopy(reference), from_name("bf16-mixed", chosen))
        dtypes = _matmul_dtypes(model, batch)
        assert all(dtypes[name] == {expected} for name in interactions), dtypes
    want = reference(batch)[keys.FORCES].detach()
    model = apply_policy(copy.deepcopy(reference), from_name("bf16-mixed", ("mlp",)))
    got = model(batch)[keys.FORCES].detach()
    relative = float((got - want).square().mean().sqrt() / want.square().mean().sqrt())
    assert SYMMETRY_RTOL["float32"] < relative <= SYMMETRY_RTOL["bf16"]


def test_the_declaration_check_finds_an_undeclared_mlp():
    class PlainMLP(RadialMLP):
        op_class = None  # a block that forgot its declaration

    model = tiny_mace()
    interaction = model.energy_model.interactions[0]
    undeclared = PlainMLP(interaction.radial_mlp.sizes, torch.Generator().manual_seed(0))
    interaction.radial_mlp = undeclared
    batch = _batch(model, [make_molecule()])
    assert _undeclared_matmul_blocks(model, batch) == ["energy_model.interactions.0.radial_mlp"]


def test_only_the_chosen_op_classes_run_in_low_precision(family):
    model = apply_policy(BUILDERS[family](), from_name("bf16-mixed", ("mlp",)))
    modules = dict(model.named_modules())
    dtypes = _matmul_dtypes(model, _batch(model, [make_molecule()]))
    for name, module in modules.items():
        kind = op_class(module)
        if kind is not None:
            assert module.math_dtype == (torch.bfloat16 if kind == "mlp" else None), name
    assert any(op_class(modules[name]) == "mlp" for name in dtypes)
    for name, found in dtypes.items():
        if op_class(modules[name]) == "mlp":
            assert found == {torch.bfloat16}, name
        else:
            assert not found & set(HALF), name


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_mlps_compute_as_torch_autocast_did(dtype):
    """Explicit casts give autocast's numbers, bit for bit: output, input and weight grads."""
    generator = torch.Generator().manual_seed(0)
    sizes = (6, 16, 16, 5)
    mlps = [AllegroMLP(sizes, act, generator) for act in ("silu", "mish", "gelu", None)]
    for mlp in [*mlps, RadialMLP(sizes, generator)]:
        mlp.float()
        x = torch.randn(40, 6, generator=generator).requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            expected = mlp(x).float()
        want = torch.autograd.grad((expected**2).sum(), [x, *mlp.parameters()])
        mlp.math_dtype = dtype
        got = mlp(x)
        assert got.dtype == torch.float32 and torch.equal(got, expected)
        grads = torch.autograd.grad((got**2).sum(), [x, *mlp.parameters()])
        assert all(torch.equal(g, w) for g, w in zip(grads, want, strict=True))


def test_reapplying_replaces_the_policy_and_keeps_the_state_dict_keys(family):
    model = BUILDERS[family]()
    keys_before = list(model.state_dict())
    batch = _batch(model, [make_molecule()])
    apply_policy(model, from_name("fp16-mixed", ("linear", "mlp", "tensor_product")))
    apply_policy(model, from_name("tf32"))
    assert current_policy(model) == MODES["tf32"]
    assert list(model.state_dict()) == keys_before
    assert all(getattr(m, "math_dtype", None) is None for m in model.modules())
    fresh = apply_policy(BUILDERS[family](), from_name("float32"))
    assert torch.equal(model(batch)[keys.FORCES], fresh(batch)[keys.FORCES])


def test_tf32_is_set_by_the_scope_of_the_caller_not_by_the_model():
    model = apply_policy(tiny_mace(), from_name("tf32"))
    seen = []
    model.energy_model.register_forward_pre_hook(
        lambda module, args: seen.append(torch.get_float32_matmul_precision())
    )
    before = torch.get_float32_matmul_precision()
    model(_batch(model, [make_molecule()]))
    with precision_scope(current_policy(model)):
        assert torch.get_float32_matmul_precision() == "high"
        model(_batch(model, [make_molecule()]))
    assert seen == [before, "high"]
    calculator = EquiforceCalculator(model)
    seen.clear()
    calculator.get_forces(make_molecule())
    assert seen == ["high"]  # the calculator enters the scope around each call
    assert torch.get_float32_matmul_precision() == before


def test_a_declared_block_without_a_compute_dtype_is_refused():
    model = tiny_mace()
    executors = [m for m in model.modules() if op_class(m) == "tensor_product"]
    for executor in executors:
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
    plain = EquiforceCalculator(calculator.model, dtype="float64").model
    assert current_policy(plain) == MODES["float64"]
    assert all(getattr(m, "math_dtype", None) is None for m in plain.modules())


def test_a_compiled_wrapper_reports_the_policy_of_the_potential_it_wraps():
    from equiforce.models.compile import compile_potential

    model = apply_policy(tiny_mace(dtype="float32"), from_name("tf32"))
    wrapper = compile_potential(model, backend="aot_eager")
    assert current_policy(wrapper) is current_policy(model) is from_name("tf32")
    assert current_policy(tiny_mace()) is None


def test_the_spec_states_the_dtype_the_parameters_are_cast_to(family, tmp_path):
    from equiforce.models.io import load_model, save_model

    model = BUILDERS[family]()  # float64
    apply_policy(model, from_name("bf16-mixed"))
    assert model.spec.dtype == "float32" and model.spec_dict()["dtype"] == "float32"
    wrapper = nn.ModuleList([model]).double()  # a cast through a module that holds it
    assert wrapper[0].spec.dtype == "float64" and model.dtype == torch.float64
    model.float()
    loaded = load_model(save_model(model, tmp_path / "model.pt"))
    assert loaded.spec.dtype == "float32" and loaded.dtype == torch.float32
