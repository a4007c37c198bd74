"""``python -m benchmarks.export_arithmetic``: the products and kernel-library calls of one
energy + forces call are recorded (every kernel call replays to its recorded output on its
copied inputs), and a smoke run writes their replayed times."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.common import preset_with_species
from benchmarks.export_arithmetic import main, record_call
from equiforce.export.package import atoms_batch
from equiforce.kernels import use_backend
from equiforce.kernels.export_ops import exportable
from equiforce.kernels.extension import kernel_ops
from equiforce.nn.edge_pairs import pair_inputs
from equiforce.workflows.bench.systems import acetylacetone

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")


def _package_model_and_inputs():
    model = preset_with_species("mace-tiny", ("H", "C", "O"), "float64", seed=0)
    model = exportable(use_backend(model, "fast"))
    batch = atoms_batch(acetylacetone(0), ["H", "C", "O"], model.r_max, torch.device("cpu"))
    batch.update(pair_inputs(batch))
    return model, batch


def _tensors(value) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else list(value)


def test_every_product_and_kernel_call_of_a_call_is_recorded_with_inputs_that_replay_it():
    model, batch = _package_model_and_inputs()
    products, kernel_calls = record_call(model, batch)
    assert {str(product.func._overloadpacket) for product in products} >= {"aten.mm"}
    assert all(product.flops > 0 for product in products)
    names = [call.func._opname for call in kernel_calls]
    # two layers: a forward contraction and its gradient each, the edge convolution's forward
    # in both layers, its two input gradients where the edge features carry positions
    assert names.count("sc_forward") == names.count("sc_gradient") == 2
    assert {"cwtp_node_out", "cwtp_edge_s", "cwtp_edge_r"} <= set(names)
    for call in kernel_calls:  # the copied inputs are those the call ran on
        again = call.func(*call.args, **call.kwargs)
        for got, want in zip(_tensors(again), _tensors(call.output), strict=True):
            assert torch.equal(got, want), call.func


def test_a_smoke_run_writes_the_replayed_products_and_kernel_calls(tmp_path):
    argv = ["--preset", "mace-tiny", "--molecules", "acac", "--dtypes", "float64"]
    assert main([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    (case,) = json.loads(next(tmp_path.glob("export_arithmetic_*.json")).read_text())["cases"]
    assert case["molecule"] == "acac" and case["n_atoms"] == 15
    assert case["per_kernel"]["sc_forward"]["calls"] == 2 and case["kernels_ms"] > 0
    assert case["products_ms"] > 0 and case["gflop"] > 0
    assert case["arithmetic_ms"] == pytest.approx(case["products_ms"] + case["kernels_ms"])
    assert case["eager_ms"] > 0
