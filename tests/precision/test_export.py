"""A bf16-mixed model traces, exports and compiles: its precision is data, not hooks.

The trace is ``compile_potential``'s (``equiforce.models.compile.trace_potential``):
``make_fx`` of one whole energy+forces call (forces by autograd inside) with symbolic atom and
edge axes. The graph goes through ``torch.export.export`` with those axes dynamic, and the
exported program runs a structure of another size. Eager is called with ``create_graph=True``,
as traced: autograd then differentiates SiLU with its differentiable formula, whose bf16
roundings differ from the fused kernel of an inference call by ~1% of the forces.
``compile_potential`` (aot_eager) of the same model gives eager's numbers. Allegro's C++ CPU
ops (which a trace does not record: it sees their torch formulations) are switched off in eager
for these bit-for-bit comparisons; tests/kernels compares them with the torch formulations.
"""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.compile import _SYMBOLIC_AXIS, compile_potential, trace_potential
from equiforce.precision import apply_policy, from_name
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from tests.backends import allegro_torch_ops

BUILDERS = {
    "mace": lambda: tiny_mace(num_interactions=1),
    "allegro": lambda: tiny_allegro(num_layers=1),
}
OUTPUTS = (keys.ENERGY, keys.FORCES, keys.NODE_ENERGY)


def _batch(model, atoms) -> dict[str, torch.Tensor]:
    config = atoms_to_configuration(atoms)
    return collate([configuration_to_graph(config, model.type_names, model.r_max)])


def _flat_inputs(model, batch) -> tuple[list[str], list[torch.Tensor]]:
    """``trace_potential``'s inputs: batch keys, then batch tensors, parameters and buffers."""
    names = sorted(name for name in keys.MODEL_INPUT_KEYS if name in batch)
    state = [t.detach() for t in (*model.parameters(), *model.buffers())]
    return names, [batch[name] for name in names] + state


def _bf16_model(family: str):
    return apply_policy(BUILDERS[family](), from_name("bf16-mixed")).eval()


@pytest.mark.parametrize(
    "family", ["allegro", pytest.param("mace", marks=pytest.mark.slow)]  # MACE: ~20 s
)
def test_bf16_mixed_model_traces_and_exports_with_symbolic_atoms_and_edges(family, monkeypatch):
    allegro_torch_ops(monkeypatch)  # eager runs the ops the trace records
    bf16_model = _bf16_model(family)
    names, args = _flat_inputs(bf16_model, _batch(bf16_model, make_fcc_cu(2, seed=0)))
    graph, out_keys = trace_potential(bf16_model, names, args, forces=True, stress=False)
    mm_dtypes = {
        n.args[0].meta["val"].dtype
        for n in graph.graph.nodes
        if n.target is torch.ops.aten.mm.default
    }
    assert torch.bfloat16 in mm_dtypes  # the blocks' casts are in the graph
    atoms, edges = Dim("n_atoms", min=2), Dim("n_edges", min=2)
    per_axis = {keys.EDGE_INDEX: edges, keys.EDGE_SHIFT: edges}
    dynamic = [
        {_SYMBOLIC_AXIS[name]: per_axis.get(name, atoms)} if name in _SYMBOLIC_AXIS else None
        for name in names
    ]
    dynamic += [None] * (len(args) - len(names))
    exported = torch.export.export(graph, tuple(args), dynamic_shapes=tuple(dynamic))

    other = _batch(bf16_model, make_molecule())  # another atom and edge count
    got = dict(zip(out_keys, exported.module()(*_flat_inputs(bf16_model, other)[1]), strict=True))
    # per edge, as traced: MACE's radial MLP once per bond rounds differently in bf16
    bf16_model.pair_edges = False
    want = bf16_model(other, compute_forces=True, create_graph=True)
    for name in OUTPUTS:
        assert torch.equal(got[name], want[name].detach()), name


def test_compiled_bf16_mixed_model_equals_eager(monkeypatch):
    allegro_torch_ops(monkeypatch)  # eager runs the ops the trace records
    bf16_model = _bf16_model("allegro")
    compiled = compile_potential(bf16_model, backend="aot_eager")
    for atoms in (make_fcc_cu(2, seed=0), make_molecule()):
        batch = _batch(bf16_model, atoms)
        got = compiled(batch, create_graph=False)
        want = bf16_model(batch, create_graph=True)
        for name in OUTPUTS:
            assert torch.equal(got[name], want[name].detach()), name
