"""MACE's operators of the kernel library (``kernels.extension.kernel_ops``).

The six operators are registered in C++ (``csrc/kernel_ops.cpp``) in a namespace named by the
build's hash; their fake (meta) and autograd formulas in Python (``edge_ops``,
``symmetric_ops``). ``torch.library.opcheck`` checks each against its schema, its fake
implementation (shapes, dtypes, symbolic sizes under ``make_fx``/``torch.export``) and its
autograd registration, on inputs that need every derivative.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from equiforce.kernels import edge_ops, executor_class, symmetric_ops
from equiforce.kernels.extension import kernel_ops, kernel_ops_apply
from equiforce.o3 import SymmetricContractionDescriptor
from equiforce.op_library import load_op_library, loaded_op_library

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")

CHECKS = (
    "test_schema",
    "test_autograd_registration",
    "test_faketensor",
    "test_aot_dispatch_dynamic",
)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _edge_inputs():
    """4 nodes, 7 edges (two sharing a weight row), 2 components, 8 channels, 3 triples."""
    triples = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 1, 2]])
    swapped = triples[:, [0, 2, 1, 3]]
    swapped = swapped[torch.argsort(swapped[:, 0] * 10 + swapped[:, 1], stable=True)]
    sender = torch.tensor([0, 1, 2, 3, 0, 2, 1])
    receiver = torch.tensor([1, 0, 3, 2, 2, 0, 3])
    weight_row = torch.tensor([0, 0, 1, 1, 2, 3, 4])
    graph = edge_ops.edge_graph(sender, receiver, 4, 4, triples, swapped, weight_row, 5)
    a = _randn(4, 2, 8, seed=0).requires_grad_(True)
    s = _randn(7, 3, seed=1).requires_grad_(True)
    r = _randn(5, 2, 8, seed=2).requires_grad_(True)
    b = _randn(4, 2, 8, seed=3).requires_grad_(True)
    return a, s, r, b, graph


def _symmetric_inputs(with_direction: bool):
    desc = SymmetricContractionDescriptor("3x0e+3x1o", "3x0e+3x1o", 3)
    module = executor_class("symmetric_contraction", "fast")(
        desc, 2, torch.Generator().manual_seed(0)
    ).double()
    p = _randn(2, module.terms.shape[1], 3, seed=1).requires_grad_(True)
    x = (0.7 * _randn(5, 4, 3, seed=2)).requires_grad_(True)
    g = _randn(5, 4, 3, seed=3).requires_grad_(True)
    v = _randn(5, 4, 3, seed=4).requires_grad_(True) if with_direction else None
    atom_type = torch.tensor([1, 0, 1, 1, 0])
    return p, x, g, v, (atom_type, module.pairs, module.cubes, module.terms)


def test_edge_operators_pass_opcheck():
    ops = kernel_ops().ops
    a, s, r, b, graph = _edge_inputs()
    edge_ops.node_out(a, s, r, graph, 4, 2)  # registers the fake formulas
    torch.library.opcheck(ops.cwtp_node_out, (a, s, r, *graph, 4, 2), test_utils=CHECKS)
    torch.library.opcheck(ops.cwtp_edge_r, (a, s, b, *graph, 2), test_utils=CHECKS)
    torch.library.opcheck(ops.cwtp_edge_s, (a, r, b, *graph), test_utils=CHECKS)


def _trilinear_form(a, s, r, b, graph) -> torch.Tensor:
    """F = sum_e sum_t S[e, c_t] sum_u A[g(e), ia_t, u] R[w(e), p_t, u] B[o(e), ib_t, u]."""
    p, ia, ib, column = graph.triples.T
    products = a[graph.gather][:, ia] * r[graph.weight_row][:, p] * b[graph.other][:, ib]
    return (s[:, column] * products.sum(-1)).sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("channels", "n_rows"),
    [(3, 7), (8, 7), (24, 7), (128, 7), (133, 7), (150, 7), (259, 7), (128, 3000)],
)
def test_edge_operators_are_the_derivatives_of_their_trilinear_form(
    channels, n_rows, dtype, kernel_build
):
    """Every channel count: whole register blocks (AVX-512: 128 channels; the AVX2 build: 64
    float32, 32 float64), single vectors and the element-by-element tail (float32 vectors hold
    16 lanes, float64 8; half as many in the AVX2 build), triples in a scrambled order
    (several per path, per component of A and per component of B); with 3000 rows of R
    (4.6 / 9.2 MB), the loops that ask for the rows ahead (R beyond the caches)."""
    generator = torch.Generator().manual_seed(channels)
    n_nodes, n_edges, d_a, d_b, n_paths = 5, 11, 3, 4, 3
    triples = torch.tensor(
        [
            [p, ia, ib, 0]
            for p in range(n_paths)
            for ia in range(d_a)
            for ib in range(d_b)
            if (p + ia + ib) % 3 != 1
        ]
    )
    triples = triples[torch.randperm(len(triples), generator=generator)]
    triples[:, 3] = torch.randperm(len(triples), generator=generator)
    swapped = triples[:, [0, 2, 1, 3]]
    sender = torch.randint(n_nodes, (n_edges,), generator=generator)
    receiver = torch.randint(n_nodes, (n_edges,), generator=generator)
    weight_row = torch.randint(n_rows, (n_edges,), generator=generator)
    graph = edge_ops.edge_graph(
        sender, receiver, n_nodes, n_nodes, triples, swapped, weight_row, n_rows
    )

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    a, s = draw(n_nodes, d_a, channels), draw(n_edges, len(triples))
    r, b = draw(n_rows, n_paths, channels), draw(n_nodes, d_b, channels)
    operands = [t.clone().requires_grad_(True) for t in (a, s, r, b)]
    want = torch.autograd.grad(_trilinear_form(*operands, graph), operands)
    a, s, r, b = (t.to(dtype) for t in (a, s, r, b))
    got = {
        "node_out": edge_ops.node_out(a, s, r, graph, n_nodes, d_b),
        "edge_r": edge_ops.edge_r(a, s, b, graph, n_paths),
        "edge_s": edge_ops.edge_s(a, r, b, graph),
    }
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    for name, index in (("node_out", 3), ("edge_r", 2), ("edge_s", 1)):
        expected = want[index].to(dtype)
        assert torch.allclose(got[name], expected, rtol=tolerance, atol=tolerance), name


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (0, "path 2 outside"),
        (1, "component of A 2 outside"),
        (2, "component of B 2 outside"),
        (3, "column of S 3 outside"),
    ],
)
def test_a_triple_outside_its_operands_is_refused_by_every_edge_operator(field, message):
    """The kernels index raw pointers with the triples: a value out of range (here 2 paths,
    2 components of A and of B, 3 columns of S) is an error naming the triple and field."""
    a, s, r, b, graph = _edge_inputs()
    triples = graph.triples.clone()
    triples[1, field] = 3 if field == 3 else 2
    graph = graph._replace(triples=triples)
    calls = (
        lambda: edge_ops.node_out(a, s, r, graph, 4, 2),
        lambda: edge_ops.edge_r(a, s, b, graph, 2),
        lambda: edge_ops.edge_s(a, r, b, graph),
    )
    with torch.no_grad():
        for call in calls:
            with pytest.raises(RuntimeError, match=f"triple 1: {message}"):
                call()


@pytest.mark.parametrize("with_direction", [False, True])
def test_symmetric_operators_pass_opcheck(with_direction):
    ops = kernel_ops().ops
    p, x, g, v, table = _symmetric_inputs(with_direction)
    symmetric_ops.contract(p, x, symmetric_ops.MonomialTable(*table, 4))  # registers fakes
    torch.library.opcheck(ops.sc_forward, (p, x, v, *table, 4), test_utils=CHECKS)
    torch.library.opcheck(ops.sc_moment, (g, x, v, *table, 2), test_utils=CHECKS)
    torch.library.opcheck(ops.sc_gradient, (p, g, x, v, *table), test_utils=CHECKS)


def test_the_library_is_loaded_once_per_namespace(tmp_path):
    library = kernel_ops()
    assert loaded_op_library(library.namespace) == library.path
    # a second copy of the same build (as a package carries) is not loaded again: the
    # dispatcher would refuse its operators' second registration
    copy = tmp_path / "copy.so"
    copy.write_bytes(library.path.read_bytes())
    assert load_op_library(library.namespace, copy) == library.path
    assert library.namespace.startswith("equiforce_kernel_ops_")


def test_operators_apply_to_cpu_float32_and_float64_only():
    cpu = torch.device("cpu")
    assert kernel_ops_apply(cpu, torch.float64) and kernel_ops_apply(cpu, torch.float32)
    assert not kernel_ops_apply(cpu, torch.bfloat16)
    assert not kernel_ops_apply(torch.device("meta"), torch.float64)


def test_the_library_needs_no_python():
    """A C++ program (no interpreter) can load it: it links libtorch_cpu, not libtorch_python
    or libpython, and leaves no Python symbol undefined."""
    if shutil.which("readelf") is None or shutil.which("nm") is None:
        pytest.skip("binutils (readelf, nm) not installed")
    path = str(kernel_ops().path)
    dynamic = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True)
    needed = [line for line in dynamic.stdout.splitlines() if "(NEEDED)" in line]
    assert any("libtorch_cpu" in line for line in needed)
    assert not any("python" in line.lower() for line in needed), needed
    undefined = subprocess.run(["nm", "-D", "-u", path], capture_output=True, text=True, check=True)
    symbols = [line.split()[-1] for line in undefined.stdout.splitlines() if line.strip()]
    assert not [s for s in symbols if s.startswith(("Py", "_Py"))]
