"""``compile_potential``: compiled energies, forces, stress and force-training gradients.

The compiled graph must reproduce eager results on batches of other sizes than the one it
was traced with, and its parameter gradients of a force loss (the double backward) must be
eager's. The fast cases use the ``aot_eager`` backend (the same make_fx trace and AOTAutograd
differentiation, without code generation); Inductor and MACE are slow (the fast kernels'
traced graphs are also checked, quickly, in ``tests/kernels/test_tracing.py``).
"""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.kernels import use_backend
from equiforce.models.compile import (
    CompiledPotential,
    _contiguous_single_cats,
    compile_potential,
)
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule, make_triclinic_cu


def _batch(model, structures) -> dict:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in structures
    ]
    return collate(graphs)


def _loss_gradients(model, parameters, batch) -> tuple[dict, list[torch.Tensor]]:
    out = model(batch, compute_forces=True, compute_stress=True, create_graph=True)
    loss = (out["energy"] ** 2).sum() + (out["forces"] ** 3).sum() + (out["stress"] ** 2).sum()
    return out, list(torch.autograd.grad(loss, parameters))


def _check_against_eager(eager, backend: str) -> None:
    compiled = compile_potential(eager, backend=backend)
    assert isinstance(compiled, CompiledPotential)
    assert list(compiled.parameters()) == list(eager.parameters())
    traced_on = _batch(eager, [make_fcc_cu(2, seed=0), make_molecule()])
    other = _batch(eager, [make_triclinic_cu(seed=2), make_molecule("H2O")])  # other sizes
    parameters = list(eager.parameters())
    for batch in (traced_on, other):
        want = eager(batch, compute_stress=True, create_graph=False)
        got = compiled(batch, compute_stress=True, create_graph=False)
        for key in ("energy", "node_energy", "forces", "stress", "virial"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-10)
        assert got["forces"].grad_fn is None  # inference runs without a graph
        out_c, grads_c = _loss_gradients(compiled, parameters, batch)
        out_e, grads_e = _loss_gradients(eager, parameters, batch)
        torch.testing.assert_close(out_c["forces"], out_e["forces"], rtol=1e-10, atol=1e-10)
        for got_grad, want_grad in zip(grads_c, grads_e, strict=True):
            torch.testing.assert_close(got_grad, want_grad, rtol=1e-8, atol=1e-10)


def test_compiled_allegro_matches_eager_inference_and_force_training():
    """Forces, stress and parameter gradients of a force loss equal eager (aot_eager)."""
    _check_against_eager(tiny_allegro(num_layers=1), "aot_eager")


def test_tiny_batches_run_eager():
    """A single atom (no edges) is below the symbolic-shape limit and runs the eager model."""
    model = tiny_allegro()
    compiled = compile_potential(model, backend="aot_eager")
    batch = _batch(model, [make_molecule("H2")[:1]])
    torch.testing.assert_close(
        compiled(batch, create_graph=False)["energy"], model(batch, create_graph=False)["energy"]
    )
    assert not compiled._compiled


@pytest.mark.slow
def test_compiled_fast_mace_matches_eager_inference_and_force_training():
    """The same for MACE on the fast kernels (C++ custom ops, per-species contraction)."""
    _check_against_eager(use_backend(tiny_mace(correlation=3), "fast"), "aot_eager")


def test_atom_count_equal_to_a_layer_width_stays_symbolic():
    """Traced on 16 atoms (the radial MLP is 16 wide), the graph runs other atom counts."""
    model = tiny_allegro(num_layers=1)
    assert 16 in {p.shape[-1] for p in model.parameters()}
    compiled = compile_potential(model, backend="aot_eager")
    crystal = make_fcc_cu(2, seed=0)
    for n_atoms in (16, 21):
        batch = _batch(model, [crystal[:n_atoms]])
        got = compiled(batch, compute_stress=True, create_graph=False)
        want = model(batch, compute_stress=True, create_graph=False)
        for key in ("energy", "forces", "stress"):  # one graph: single-row sums rewritten
            torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-10)
    assert len(compiled._compiled) == 1


@pytest.mark.slow
def test_inductor_allegro_matches_eager():
    """Inductor-generated code: the same checks as aot_eager."""
    _check_against_eager(tiny_allegro(num_layers=1), "inductor")


def test_inductor_compiles_a_view_of_a_one_input_cat():
    """Inductor compiles FastLinear's ``cat([x.transpose(1, 2)]).reshape(n * 3, -1)``.

    Traced with a symbolic n; without the rewrite Inductor refuses the view.
    """

    def pattern(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        stacked = torch.cat([x.reshape(n, 4, 3).transpose(1, 2)], dim=2)
        return (stacked.reshape(n * 3, -1) * 2.0).sum(0)

    graph = make_fx(pattern, tracing_mode="symbolic")(torch.randn(7, 12))
    _contiguous_single_cats(graph)
    assert torch.ops.aten.cat.default not in {node.target for node in graph.graph.nodes}
    compiled = torch.compile(graph, backend="inductor", dynamic=True)
    x = torch.randn(9, 12, dtype=torch.float64)
    torch.testing.assert_close(compiled(x), pattern(x), rtol=1e-12, atol=1e-12)
