"""The ZBL pair repulsion (``ModelSpec.pair_repulsion``) against its formulas written out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms

from equiforce.data import keys
from equiforce.models.registry import build_model
from equiforce.testing import checks
from equiforce.testing.models import tiny_allegro, tiny_mace


def _zbl_dimer(z1: int, z2: int, r: float, cutoff: float, p: int, form: str) -> float:
    """ZBL pair energy (eV) of two atoms r Å apart: mace-torch's constants, or LAMMPS's
    ``pair_style zbl`` ones (as nequip's ZBL), times the polynomial envelope at ``cutoff``."""
    if form == "mace":
        k, a = 14.3996, 0.4543 * 0.529 / (z1**0.3 + z2**0.3)
        terms = ((0.1818, 3.2), (0.5099, 0.9423), (0.2802, 0.4028), (0.02817, 0.2016))
    else:
        k, a = 14.399645, 0.46850 / (z1**0.23 + z2**0.23)
        terms = ((0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290), (0.02817, 0.20162))
    phi = sum(c * np.exp(-d * r / a) for c, d in terms)
    u = r / cutoff
    envelope = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1)
    envelope -= p * (p + 1) / 2 * u ** (p + 2)
    return k * z1 * z2 / r * phi * envelope * (u < 1)


@pytest.mark.parametrize("form", ["mace", "lammps"])
@pytest.mark.parametrize("family", ["mace", "allegro"])
@pytest.mark.parametrize("r", [0.6, 1.5, 2.6, 2.8, 3.9])
def test_a_dimer_gains_the_zbl_energy(r, family, form):
    """Cu-Au: E(with) - E(without) = V_ZBL(r), times the scale for MACE (inside its scale and
    shift, as mace-torch; Allegro's is outside, as nequip's), zero beyond the cutoff (the
    covalent radii's sum 2.68 Å for the mace form, r_max = 4 Å for the lammps form); the
    forces differ by its derivative."""
    make = {"mace": tiny_mace, "allegro": tiny_allegro}[family]
    plain = make(torch.float64, scale=1.7, shift=0.3)
    spec = dataclasses.replace(plain.spec, pair_repulsion=True, pair_repulsion_form=form)
    zbl = build_model(family, spec)
    zbl.load_state_dict(plain.state_dict())
    order = {"mace": "num_polynomial_cutoff", "allegro": "polynomial_cutoff_p"}[family]
    cutoff = 1.32 + 1.36 if form == "mace" else plain.spec.r_max
    scale = 1.7 if family == "mace" else 1.0
    dimers = [Atoms("CuAu", positions=[[0, 0, 0], [0, 0, d]]) for d in (r, r + 1e-5)]
    gained = [
        float(checks.predict(zbl, [d])[keys.ENERGY][0] - checks.predict(plain, [d])[keys.ENERGY][0])
        for d in dimers
    ]
    want = scale * _zbl_dimer(29, 79, r, cutoff, getattr(plain.spec, order), form)
    np.testing.assert_allclose(gained[0], want, rtol=1e-12, atol=1e-12)
    assert (want == 0.0) == (r > cutoff) and want >= 0.0
    with_zbl, without = (checks.predict(m, [dimers[0]])[keys.FORCES] for m in (zbl, plain))
    slope = (gained[1] - gained[0]) / 1e-5  # dE/dr by a forward difference
    np.testing.assert_allclose(float((with_zbl - without)[1, 2]), -slope, rtol=1e-4, atol=1e-6)


def test_an_unknown_form_is_named():
    with pytest.raises(ValueError, match="pair_repulsion_form must be one of"):
        tiny_mace(pair_repulsion=True, pair_repulsion_form="ziegler")


@pytest.mark.parametrize("form", ["mace", "lammps"])
def test_the_eager_subset_equals_the_traced_evaluation_of_every_edge(form, monkeypatch):
    """Eagerly only the edges inside their cutoff are evaluated; a trace evaluates all of
    them (data-independent shapes): energies and their gradients agree."""
    from equiforce.nn import zbl as zbl_module

    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(400, 3, generator=generator, dtype=torch.float64) * 1.8
    edge_index = torch.randint(0, 30, (2, 400), generator=generator)
    atom_type = torch.randint(0, 2, (30,), generator=generator)
    module = zbl_module.ZBLRepulsion(["Cu", "Au"], 5, form, torch.full((2, 2), 3.5))
    results = []
    for traced in (False, True):
        monkeypatch.setattr(zbl_module, "traced", lambda *_, t=traced: t)
        edge_vec = vectors.clone().requires_grad_(True)
        energies = module.edge_energies(edge_vec, edge_index, atom_type)
        (gradient,) = torch.autograd.grad((energies * torch.arange(400.0)).sum(), edge_vec)
        results.append((energies.detach(), gradient))
    assert 0 < int((results[0][0] != 0).sum()) < 400  # some edges inside, some beyond
    for got, want in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
