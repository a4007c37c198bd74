"""Reference kernels: agreement with e3nn modules (same weights) and equivariance."""

from __future__ import annotations

import pytest
import torch
from scipy.spatial.transform import Rotation

from equiforce.kernels import make_channelwise_tp, make_linear, make_symmetric_contraction
from equiforce.o3 import (
    ChannelwiseTPDescriptor,
    Irreps,
    LinearDescriptor,
    SymmetricContractionDescriptor,
    sh_irreps,
    spherical_harmonics,
    wigner_3j,
    wigner_D,
)
from equiforce.o3.e3nn_compat import e3nn_o3


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed), dtype=torch.float64)


def _irreps_rotation(irreps: Irreps, matrix: torch.Tensor) -> torch.Tensor:
    """Block-diagonal representation of an orthogonal 3x3 matrix on ``irreps``."""
    det = float(torch.linalg.det(matrix))
    blocks = []
    for mul, ir in irreps:
        d = wigner_D(ir.l, matrix * det) * (det if ir.p == -1 else 1.0)
        blocks += [d] * mul
    return torch.block_diag(*blocks)


def _orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    matrix = torch.tensor(Rotation.random(random_state=seed).as_matrix())
    return -matrix if reflect else matrix


def test_linear_matches_e3nn_linear_with_the_same_weights():
    irreps_in, irreps_out = Irreps("3x0e+2x1o+2x0e+1x2e"), Irreps("4x0e+3x1o+1x1e")
    ours = make_linear(LinearDescriptor(irreps_in, irreps_out), _generator())
    theirs = e3nn_o3.Linear(irreps_in, irreps_out).double()
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
    x = _randn(7, irreps_in.dim)
    torch.testing.assert_close(ours(x), theirs(x))


def test_species_linear_matches_e3nn_tensor_product_with_one_hot():
    irreps_in, irreps_out, n_types = Irreps("3x0e+2x1o"), Irreps("2x0e+4x1o"), 3
    ours = make_linear(LinearDescriptor(irreps_in, irreps_out, n_types), _generator())
    theirs = e3nn_o3.FullyConnectedTensorProduct(irreps_in, f"{n_types}x0e", irreps_out).double()
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
    x, atom_type = _randn(6, irreps_in.dim), torch.tensor([0, 2, 1, 1, 0, 2])
    one_hot = torch.nn.functional.one_hot(atom_type, n_types).double()
    torch.testing.assert_close(ours(x, atom_type), theirs(x, one_hot))


def _tp_inputs(desc: ChannelwiseTPDescriptor, n_nodes: int = 5, n_edges: int = 12):
    nodes = _randn(n_nodes, desc.irreps_in1.dim, seed=1)
    vectors = _randn(n_edges, 3, seed=2)
    weights = _randn(n_edges, desc.weight_numel, seed=3)
    index = torch.randint(0, n_nodes, (2, n_edges), generator=_generator(4))
    return nodes, vectors, weights, index


def test_channelwise_tp_matches_e3nn_uvu_tensor_product_up_to_coupling_signs():
    desc = ChannelwiseTPDescriptor(Irreps("4x0e+4x1o"), sh_irreps(2), Irreps("0e+1o+2e"))
    instructions = [(p.i_in1, p.i_in2, p.i_out, "uvu", True) for p in desc.paths]
    theirs = e3nn_o3.TensorProduct(
        desc.irreps_in1,
        desc.irreps_in2,
        desc.irreps_out,
        instructions,
        shared_weights=False,
        internal_weights=False,
    ).double()
    nodes, vectors, weights, index = _tp_inputs(desc)
    sh = spherical_harmonics(2, vectors)
    signs = torch.ones(desc.weight_numel, dtype=torch.float64)
    for path in desc.paths:
        e3nn_coupling = e3nn_o3.wigner_3j(path.l1, path.l2, path.l_out, dtype=torch.float64)
        sign = torch.sign((wigner_3j(path.l1, path.l2, path.l_out) * e3nn_coupling).sum())
        signs[path.weight_offset : path.weight_offset + path.mul] = sign
    per_edge = theirs(nodes[index[1]], sh, weights * signs)
    expected = torch.zeros(5, desc.irreps_out.dim, dtype=torch.float64).index_add(
        0, index[0], per_edge
    )
    ours = make_channelwise_tp(desc)(nodes, sh, weights, index[1], index[0])
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("reflect", [False, True])
def test_channelwise_tp_is_equivariant(reflect):
    desc = ChannelwiseTPDescriptor(Irreps("3x0e+3x1o+3x2e"), sh_irreps(3), Irreps("0e+1o+2e+3o"))
    tp = make_channelwise_tp(desc)
    nodes, vectors, weights, index = _tp_inputs(desc)
    matrix = _orthogonal(7, reflect)
    out = tp(nodes, spherical_harmonics(3, vectors), weights, index[1], index[0])
    nodes_rotated = nodes @ _irreps_rotation(desc.irreps_in1, matrix).T
    sh_rotated = spherical_harmonics(3, vectors @ matrix.T)
    out_rotated = tp(nodes_rotated, sh_rotated, weights, index[1], index[0])
    expected = out @ _irreps_rotation(desc.irreps_out, matrix).T
    torch.testing.assert_close(out_rotated, expected, atol=1e-11, rtol=0)


@pytest.mark.parametrize("reflect", [False, True])
def test_symmetric_contraction_is_equivariant_and_species_dependent(reflect):
    irreps_in, irreps_out = Irreps("4x0e+4x1o+4x2e+4x3o"), Irreps("4x0e+4x1o+4x2e")
    desc = SymmetricContractionDescriptor(irreps_in, irreps_out, correlation=3)
    contraction = make_symmetric_contraction(desc, n_types=2, generator=_generator())
    x = _randn(6, 4, desc.coupling_irreps.dim)
    atom_type = torch.tensor([0, 1, 0, 1, 1, 0])
    matrix = _orthogonal(11, reflect)
    rotation_in = _irreps_rotation(desc.coupling_irreps, matrix)
    out = contraction(x, atom_type)
    out_rotated = contraction(x @ rotation_in.T, atom_type)
    torch.testing.assert_close(
        out_rotated, out @ _irreps_rotation(irreps_out, matrix).T, atol=1e-11, rtol=0
    )
    swapped = contraction(x, 1 - atom_type)
    assert (swapped - out).abs().max() > 1e-3


def test_kernels_run_in_float32():
    desc = SymmetricContractionDescriptor(Irreps("4x0e+4x1o"), Irreps("4x0e"), correlation=2)
    contraction = make_symmetric_contraction(desc, 1, _generator()).to(torch.float32)
    out = contraction(_randn(3, 4, 4).float(), torch.zeros(3, dtype=torch.long))
    assert out.dtype == torch.float32 and out.shape == (3, 4)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        make_linear(
            LinearDescriptor(Irreps("1x0e"), Irreps("1x0e")), _generator(), backend="triton"
        )
