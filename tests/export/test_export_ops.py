"""The export executors (``equiforce.kernels.export_ops``) against the reference, in eager mode.

The packaged path is checked in ``test_export.py`` (a fast-backend MACE package equal to eager
in float64); here the executors and ``exportable`` are checked without a compile: values and
first derivatives (what forces need) of a MACE-sized layer, and whole models, both ways an
executor computes (``paths``): with the C++ kernel library (on CPU, where it builds) and with
the plain-torch formulation (CUDA, other dtypes, no compiler).
"""

from __future__ import annotations

import copy

import pytest
import torch

from equiforce.data import keys
from equiforce.export.package import atoms_batch
from equiforce.kernels import executor_class, export_ops, use_backend
from equiforce.kernels.export_ops import (
    ExportChannelwiseTensorProduct,
    ExportSymmetricContraction,
    exportable,
)
from equiforce.kernels.extension import kernel_ops
from equiforce.o3 import (
    ChannelwiseTPDescriptor,
    SymmetricContractionDescriptor,
    hidden_irreps,
    sh_irreps,
    tp_target_irreps,
)
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_molecule, make_triclinic_cu
from equiforce.testing.tolerances import TOL

SH = sh_irreps(3)


@pytest.fixture(params=["kernels", "torch"])
def paths(request, monkeypatch):
    """Which way the export executors compute: the kernel library's or plain torch."""
    if request.param == "kernels" and kernel_ops() is None:
        pytest.skip("the C++ kernels do not build here")
    if request.param == "torch":
        monkeypatch.setattr(export_ops, "kernel_ops_apply", lambda device, dtype: False)
    return request.param


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _value_and_grads(module, inputs, call):
    leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    y = call(module, *leaves)
    floating = [x for x in leaves if x.is_floating_point()]
    grads = torch.autograd.grad((y * _randn(*y.shape, seed=9)).sum(), floating)
    return [y.detach(), *grads]


@pytest.mark.parametrize("lmax", [0, 1])
def test_export_edge_convolution_equals_reference_with_derivatives(lmax, paths):
    desc = ChannelwiseTPDescriptor(hidden_irreps(8, lmax), SH, tp_target_irreps(8, SH))
    n_nodes, n_edges = 5, 17
    sender = torch.randint(0, n_nodes, (n_edges,), generator=torch.Generator().manual_seed(1))
    receiver = torch.randint(0, n_nodes, (n_edges,), generator=torch.Generator().manual_seed(2))
    inputs = [
        _randn(n_nodes, desc.irreps_in1.dim, seed=3),
        _randn(n_edges, desc.irreps_in2.dim, seed=4),
        _randn(n_edges, desc.weight_numel, seed=5),
        sender,
        receiver,
    ]
    reference = executor_class("channelwise_tp", "reference")(desc)
    export = ExportChannelwiseTensorProduct(desc)
    want = _value_and_grads(reference, inputs, lambda m, *a: m(*a))
    got = _value_and_grads(export, inputs, lambda m, *a: m(*a))
    for name, g, w in zip(["out", "d_nodes", "d_attrs", "d_weights"], got, want, strict=True):
        torch.testing.assert_close(g, w, atol=TOL.fp64.atol, rtol=TOL.fp64.rtol, msg=name)


@pytest.mark.parametrize("correlation, n_types", [(2, 1), (3, 3)])
def test_export_symmetric_contraction_equals_reference_with_derivatives(
    correlation, n_types, paths
):
    target = tp_target_irreps(4, SH)
    desc = SymmetricContractionDescriptor(target, hidden_irreps(4, 1), correlation)
    reference = executor_class("symmetric_contraction", "reference")(
        desc, n_types, torch.Generator().manual_seed(0)
    )
    export = ExportSymmetricContraction(desc, n_types, torch.Generator().manual_seed(1))
    export.load_state_dict(reference.state_dict())
    export.fold()
    assert hasattr(export, "kernel_folded") == (paths == "kernels")
    n = 7
    atom_type = torch.arange(n) % n_types
    inputs = [_randn(n, 4, desc.coupling_irreps.dim, seed=6), atom_type]

    want = _value_and_grads(reference, inputs, lambda m, *a: m(*a))
    got = _value_and_grads(export, inputs, lambda m, *a: m(*a))
    for name, g, w in zip(["out", "d_x"], got, want, strict=True):
        torch.testing.assert_close(g, w, atol=TOL.fp64.atol, rtol=TOL.fp64.rtol, msg=name)


def test_exportable_keeps_the_state_and_equals_the_reference_model(paths):
    model = use_backend(tiny_mace(torch.float64, num_interactions=2).eval(), "fast")
    reference = use_backend(copy.deepcopy(model), "reference")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    exportable(model)
    swapped = [type(m) for m in model.modules()]
    assert swapped.count(ExportChannelwiseTensorProduct) == 2
    assert swapped.count(ExportSymmetricContraction) == 2
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    for atoms in (make_molecule(), make_triclinic_cu(seed=2)):
        batch = atoms_batch(atoms, list(model.type_names), model.r_max, torch.device("cpu"))
        stress = bool(atoms.pbc.all())
        got = model(batch, compute_stress=stress, create_graph=False)
        want = reference(batch, compute_stress=stress, create_graph=False)
        for name in [keys.ENERGY, keys.FORCES] + [keys.STRESS] * stress:
            torch.testing.assert_close(
                got[name], want[name], atol=TOL.fp64.atol, rtol=TOL.fp64.rtol, msg=name
            )
