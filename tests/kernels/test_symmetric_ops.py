"""The C++ symmetric-contraction kernels (``kernels.symmetric_ops``) and their derivatives.

The fast executor runs them on CPU in float32/float64. Checked here: the contraction equals
the polynomial of the monomials with dense coefficients, for the executor's sparse terms and
for every (output, monomial) pair (a monomial feeding several outputs, as with l >= 2
outputs), in float32 with 16 and 20 channels too (the vector blocks and the channel tail);
first and second derivatives against finite differences (``gradcheck``/``gradgradcheck`` on a
small polynomial, every input: folded coefficients, features), the parameter and input
gradients of a force loss of a MACE-sized layer equal to the reference executor's to 1e-10
in float64 (also with a species that has no atom, and with 20 channels: a partial 16-channel
block), and third derivatives (their torch path) against finite differences and the
reference executor.
"""

from __future__ import annotations

import pytest
import torch

from equiforce.kernels import executor_class, symmetric_ops
from equiforce.kernels.extension import kernel_ops
from equiforce.o3 import SymmetricContractionDescriptor

pytestmark = pytest.mark.skipif(kernel_ops() is None, reason="no C++ compiler")


def _small_inputs(
    seed: int = 0,
    terms: str = "sparse",
    channels: int = 3,
    atoms: int = 5,
    dtype: torch.dtype = torch.float64,
):
    """A 0e+1o -> 0e+1o, correlation-3 contraction of ``channels`` channels and 2 species.

    ``terms``: ``sparse``, the executor's (each monomial feeds one output component), or
    ``dense``, every (output, monomial) pair.
    """
    desc = SymmetricContractionDescriptor("3x0e+3x1o", "3x0e+3x1o", 3)
    module = executor_class("symmetric_contraction", "fast")(
        desc, 2, torch.Generator().manual_seed(seed)
    ).double()
    table_terms = module.terms
    if terms == "dense":
        n_monomials = 4 + module.pairs.shape[1] + module.cubes.shape[1]
        table_terms = torch.cartesian_prod(torch.arange(4), torch.arange(n_monomials)).T
    generator = torch.Generator().manual_seed(seed + 1)
    p = torch.randn(2, table_terms.shape[1], channels, generator=generator, dtype=dtype)
    x = 0.7 * torch.randn(atoms, 4, channels, generator=generator, dtype=dtype)
    atom_type = torch.randint(0, 2, (atoms,), generator=generator)
    table = symmetric_ops.MonomialTable(
        atom_type, module.pairs, module.cubes, table_terms.contiguous(), 4
    )
    return p.requires_grad_(True), x.requires_grad_(True), table


def _dense(p, table, d: int):
    """P as (n_types, out_dim, M, C): each term's row at (output, monomial), zeros elsewhere
    (d: the number of components, x's second axis)."""
    n_monomials = d + table.pairs.shape[1] + table.cubes.shape[1]
    dense = p.new_zeros(p.shape[0], table.n_out, n_monomials, p.shape[2])
    dense[:, table.terms[0], table.terms[1]] = p
    return dense


@pytest.mark.parametrize("terms", ["sparse", "dense"])
def test_contract_first_and_second_derivatives_match_finite_differences(terms):
    p, x, table = _small_inputs(terms=terms)
    assert table.cubes.shape[1] > 0 and table.pairs.shape[1] > 0

    def f(p, x):
        return symmetric_ops.contract(p, x, table)

    assert torch.autograd.gradcheck(f, (p, x))
    assert torch.autograd.gradgradcheck(f, (p, x))


@pytest.mark.parametrize(
    ("terms", "channels", "dtype"),
    [
        ("sparse", 3, torch.float64),
        ("dense", 3, torch.float64),
        ("sparse", 20, torch.float64),
        ("dense", 16, torch.float32),
        ("sparse", 20, torch.float32),
    ],
)
def test_contract_and_its_derivatives_are_the_dense_polynomials(
    terms, channels, dtype, kernel_build
):
    """Forward, moment (dP) and gradient (dx) of the kernels on 19 atoms (a full group of
    atoms of one species and a partial one) against the polynomial of the monomials; this
    CPU's build and the AVX2 one (16-channel blocks of 2 float32 or 4 float64 vectors)."""
    p, x, table = _small_inputs(terms=terms, channels=channels, atoms=19, dtype=dtype)
    a, b = table.pairs
    k, q = table.cubes

    def polynomial(p, x):
        quadratic = x[:, a] * x[:, b]  # (n, n_pairs, C)
        monomials = torch.cat([x, quadratic, x[:, k] * quadratic[:, q]], dim=1)
        dense = _dense(p, table, x.shape[1])
        return torch.einsum("nomc,nmc->noc", dense[table.atom_type], monomials)

    y = symmetric_ops.contract(p, x, table)
    expected = polynomial(p, x)
    weight = torch.randn_like(y)
    got = torch.autograd.grad((y * weight).sum(), [p, x])
    want = torch.autograd.grad((expected * weight).sum(), [p, x])
    tolerance = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(y, expected, **tolerance)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tolerance)


def _force_loss_grads(module, x, atom_type):
    """Output, d(y.v)/dx, and the gradients of |d(y.v)/dx|^2 + sum(y) w.r.t. x and weights."""
    leaf = x.detach().requires_grad_(True)
    y = module(leaf, atom_type)
    v = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).reshape(y.shape)
    (first,) = torch.autograd.grad((y * v).sum(), [leaf], create_graph=True)
    loss = (first**2).sum() + y.sum()
    second = torch.autograd.grad(loss, [leaf, *module.parameters()])
    return [y.detach(), first.detach(), *second]


@pytest.mark.parametrize("channels", [16, 20])
def test_force_loss_gradients_equal_the_reference_in_float64(channels, kernel_build):
    desc = SymmetricContractionDescriptor(
        f"{channels}x0e+{channels}x1o+{channels}x2e+{channels}x3o",
        f"{channels}x0e+{channels}x1o",
        3,
    )
    args = (desc, 4, torch.Generator().manual_seed(3))
    ref = executor_class("symmetric_contraction", "reference")(*args).double()
    fast = executor_class("symmetric_contraction", "fast")(*args).double()
    fast.load_state_dict(ref.state_dict())
    generator = torch.Generator().manual_seed(4)
    x = 0.5 * torch.randn(9, channels, 16, generator=generator, dtype=torch.float64)
    atom_type = torch.tensor([2, 0, 2, 1, 0, 0, 2, 1, 2])  # species 3 has no atom
    expected = _force_loss_grads(ref, x, atom_type)
    got = _force_loss_grads(fast, x, atom_type)
    for name, e, g in zip(["y", "dx", "ddx", "ddw0", "ddw1"], expected, got, strict=True):
        scale = max(e.abs().max().item(), 1.0)
        torch.testing.assert_close(g, e, atol=1e-10 * scale, rtol=0, msg=name)


def test_third_derivatives_equal_the_reference_executors():
    """A Hessian-vector product trained through the contraction (distillation's Hessian term):
    the third derivatives (torch path) equal the reference executor's in float64."""
    desc = SymmetricContractionDescriptor("3x0e+3x1o", "3x0e+3x1o", 3)
    fast = executor_class("symmetric_contraction", "fast")(
        desc, 2, torch.Generator().manual_seed(0)
    ).double()
    reference = executor_class("symmetric_contraction", "reference")(
        desc, 2, torch.Generator().manual_seed(0)
    ).double()
    reference.load_state_dict(fast.state_dict())
    generator = torch.Generator().manual_seed(3)
    x = 0.7 * torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)  # (n, C, d)
    direction = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    atom_type = torch.tensor([1, 0, 1, 1, 0])

    def third(module):
        features = x.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(
            module(features, atom_type).pow(2).sum(), [features], create_graph=True
        )
        (hvp,) = torch.autograd.grad((first * direction).sum(), [features], create_graph=True)
        loss = hvp.pow(2).sum()
        return torch.autograd.grad(loss, [features, *module.parameters()])

    for got, want in zip(third(fast), third(reference), strict=True):
        scale = max(want.abs().max().item(), 1.0)
        torch.testing.assert_close(got, want, atol=1e-10 * scale, rtol=0)


def test_third_derivatives_pass_gradcheck():
    p, x, table = _small_inputs()
    direction = torch.randn_like(x)

    def hessian_vector(p, x):
        y = symmetric_ops.contract(p, x, table)
        (first,) = torch.autograd.grad(y.pow(2).sum(), [x], create_graph=True)
        (second,) = torch.autograd.grad((first * direction).sum(), [x], create_graph=True)
        return second

    inputs = (p.clone().requires_grad_(True), x.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(hessian_vector, inputs)


def test_species_outside_the_table_is_an_error():
    p, x, table = _small_inputs()
    bad = table._replace(atom_type=torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(RuntimeError, match="atom_type 2 of atom 2"):
        symmetric_ops.contract(p, x, bad)
