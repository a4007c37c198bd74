"""The ZBL pair repulsion (``MACESpec`` / ``AllegroSpec.pair_repulsion``) against its formula
written out."""

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


def _zbl_dimer(z1: int, z2: int, r: float, radius1: float, radius2: float, p: int) -> float:
    """ZBL pair energy (eV) of two atoms r Å apart, mace's constants and envelope."""
    a = 0.4543 * 0.529 / (z1**0.3 + z2**0.3)
    x = r / a
    phi = (
        0.1818 * np.exp(-3.2 * x)
        + 0.5099 * np.exp(-0.9423 * x)
        + 0.2802 * np.exp(-0.4028 * x)
        + 0.02817 * np.exp(-0.2016 * x)
    )
    u = r / (radius1 + radius2)
    envelope = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1)
    envelope -= p * (p + 1) / 2 * u ** (p + 2)
    return 14.3996 * z1 * z2 / r * phi * envelope * (u < 1)


@pytest.mark.parametrize("family", ["mace", "allegro"])
@pytest.mark.parametrize("r", [0.6, 1.5, 2.6, 2.8])
def test_a_dimer_gains_the_zbl_energy(r, family):
    """Cu-Au (covalent radii 1.32 + 1.36 Å): E(with) - E(without) = V_ZBL(r), times the
    scale for MACE (inside its scale and shift, as mace-torch), zero beyond 2.68 Å; the
    forces differ by its derivative."""
    make = {"mace": tiny_mace, "allegro": tiny_allegro}[family]
    plain = make(torch.float64, scale=1.7, shift=0.3)
    zbl = build_model(family, dataclasses.replace(plain.spec, pair_repulsion=True))
    zbl.load_state_dict(plain.state_dict())
    order = {"mace": "num_polynomial_cutoff", "allegro": "polynomial_cutoff_p"}[family]
    envelope_order = getattr(plain.spec, order)
    scale = 1.7 if family == "mace" else 1.0
    dimers = [Atoms("CuAu", positions=[[0, 0, 0], [0, 0, d]]) for d in (r, r + 1e-5)]
    gained = [
        float(checks.predict(zbl, [d])[keys.ENERGY][0] - checks.predict(plain, [d])[keys.ENERGY][0])
        for d in dimers
    ]
    want = scale * _zbl_dimer(29, 79, r, 1.32, 1.36, envelope_order)
    np.testing.assert_allclose(gained[0], want, rtol=1e-12, atol=1e-12)
    assert (want == 0.0) == (r > 2.68) and want >= 0.0
    with_zbl, without = (checks.predict(m, [dimers[0]])[keys.FORCES] for m in (zbl, plain))
    force_gained = with_zbl - without
    slope = (gained[1] - gained[0]) / 1e-5  # dE/dr by a forward difference
    np.testing.assert_allclose(float(force_gained[1, 2]), -slope, rtol=1e-4, atol=1e-6)
