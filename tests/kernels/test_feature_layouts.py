"""The ``ir_mul`` feature layout is e3nn's ``mul_ir`` with every block transposed.

The reference executors in ``ir_mul`` (what MACE builds) must equal the same executors in
``mul_ir`` (e3nn's layout, checked against e3nn and mace-torch elsewhere) on inputs and
outputs converted block by block here, independently of ``o3.irreps``' helpers; the other
backends are held to the reference in both layouts by ``test_backends``. Same weights:
the weights' layout does not depend on the features'.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from equiforce.kernels import executor_class
from equiforce.o3 import (
    ChannelwiseTPDescriptor,
    Irreps,
    LinearDescriptor,
    SymmetricContractionDescriptor,
    hidden_irreps,
    sh_irreps,
    tp_target_irreps,
)

SH = sh_irreps(3)


def _to_ir_mul(x: torch.Tensor, irreps: Irreps) -> torch.Tensor:
    """(n, irreps.dim) mul_ir -> ir_mul, one block at a time."""
    out, start = [], 0
    for mul, ir in irreps:
        block = x[:, start : start + mul * ir.dim]
        out.append(block.reshape(-1, mul, ir.dim).transpose(1, 2).reshape(-1, mul * ir.dim))
        start += mul * ir.dim
    return torch.cat(out, dim=1)


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _pair(kind: str, desc, *args):
    """Reference executors of ``desc`` in mul_ir and in ir_mul, with the same weights."""
    cls = executor_class(kind, "reference")
    e3nn = cls(dataclasses.replace(desc, layout="mul_ir"), *args)
    channel_last = cls(dataclasses.replace(desc, layout="ir_mul"), *args)
    channel_last.load_state_dict(e3nn.state_dict())
    return e3nn, channel_last


@pytest.mark.parametrize("n_types", [0, 3])
def test_linear_in_ir_mul_is_the_transposed_blocks(n_types):
    irreps_in = Irreps("8x0e + 8x1o + 8x1o + 8x2e")
    irreps_out = Irreps("8x0e + 8x1o + 8x2e + 8x3o")  # 3o has no input: a zero block
    desc = LinearDescriptor(irreps_in, irreps_out, n_types)
    e3nn, channel_last = _pair("linear", desc, torch.Generator().manual_seed(0))
    x = _randn(5, irreps_in.dim, seed=1)
    atom_type = torch.arange(5) % 3 if n_types else None
    expected = _to_ir_mul(e3nn(x, atom_type), irreps_out)
    got = channel_last(_to_ir_mul(x, irreps_in), atom_type)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert not torch.equal(_to_ir_mul(x, irreps_in), x)  # the layouts differ on these irreps


def test_channelwise_tp_in_ir_mul_is_the_transposed_blocks():
    hidden = hidden_irreps(8, 2)
    desc = ChannelwiseTPDescriptor(hidden, SH, tp_target_irreps(8, SH))
    e3nn, channel_last = _pair("channelwise_tp", desc)
    nodes, sh = _randn(6, hidden.dim, seed=2), _randn(20, SH.dim, seed=3)
    weights = _randn(20, desc.weight_numel, seed=4)
    index = torch.randint(0, 6, (2, 20), generator=torch.Generator().manual_seed(5))
    expected = _to_ir_mul(e3nn(nodes, sh, weights, index[1], index[0]), desc.irreps_out)
    got = channel_last(_to_ir_mul(nodes, hidden), sh, weights, index[1], index[0])
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_symmetric_contraction_output_in_ir_mul_is_the_transposed_blocks():
    desc = SymmetricContractionDescriptor(tp_target_irreps(8, SH), hidden_irreps(8, 2), 3)
    e3nn, channel_last = _pair("symmetric_contraction", desc, 2, torch.Generator().manual_seed(6))
    x = 0.5 * _randn(5, 8, desc.coupling_irreps.dim, seed=7)
    atom_type = torch.tensor([0, 1, 1, 0, 1])
    expected = _to_ir_mul(e3nn(x, atom_type), desc.irreps_out)
    torch.testing.assert_close(channel_last(x, atom_type), expected, atol=1e-12, rtol=0)


def test_an_unknown_layout_is_refused_by_every_descriptor():
    with pytest.raises(ValueError, match="unknown feature layout 'mul_first'"):
        LinearDescriptor("4x0e", "4x0e", layout="mul_first")
    with pytest.raises(ValueError, match="unknown feature layout"):
        ChannelwiseTPDescriptor("4x0e", SH, "4x0e", "channels")
    with pytest.raises(ValueError, match="unknown feature layout"):
        SymmetricContractionDescriptor("4x0e", "4x0e", 2, "e3nn")
