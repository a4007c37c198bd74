"""Elastic constants (``equiforce.md.elastic``, ``equiforce elastic``): an isotropic cell of
known Lamé constants in any frame, EMT copper's cubic constants against its equation of state,
hcp's relaxed and clamped ions; the command prints and writes them."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import BFGS
from scipy.spatial.transform import Rotation

from equiforce.cli import elastic as elastic_cli
from equiforce.md.elastic import elastic_constants
from equiforce.testing.calculators import ElasticCell


def relaxed(atoms: Atoms) -> Atoms:
    """``atoms`` with EMT, positions and cell relaxed to 1e-6 eV/Å."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-6, steps=500)
    return atoms


def test_isotropic_constants_in_any_frame():
    """A cell of St Venant-Kirchhoff energy (Lamé 0.1 and 0.05 eV/Å^3), its reference a
    rotated triclinic cell: C11 = lame + 2 mu, C12 = lame, C44 = mu and zeros elsewhere
    (1e-3 relative: the finite strains' cubic term), Voigt = Reuss, Young's modulus and
    Poisson's ratio the isotropic solid's; the fit's asymmetry vanishes."""
    lame, mu = 0.1 / units.GPa, 0.05 / units.GPa  # GPa
    turn = Rotation.from_rotvec([0.4, -0.2, 0.7]).as_matrix()
    reference = np.array([[9.0, 0.0, 0.0], [2.0, 8.0, 0.0], [1.0, -1.5, 10.0]]) @ turn.T
    particles = Atoms("Ar2", scaled_positions=[[0, 0, 0], [0.5, 0.4, 0.3]], cell=reference)
    particles.pbc = True
    result = elastic_constants(particles, ElasticCell(reference, 0.1, 0.05))
    expected = np.zeros((6, 6))
    expected[:3, :3] = lame
    expected[range(3), range(3)] = lame + 2 * mu
    expected[range(3, 6), range(3, 6)] = mu
    np.testing.assert_allclose(result.constants, expected, rtol=0, atol=1e-3 * expected.max())
    assert result.bulk_voigt == pytest.approx(lame + 2 * mu / 3, rel=1e-3)
    assert result.bulk_reuss == pytest.approx(result.bulk_voigt, rel=1e-4)
    assert result.shear_hill == pytest.approx(mu, rel=1e-3)
    assert result.young == pytest.approx(mu * (3 * lame + 2 * mu) / (lame + mu), rel=1e-3)
    assert result.poisson == pytest.approx(lame / (2 * (lame + mu)), rel=1e-3)
    assert result.stable and result.asymmetry < 1e-6 and result.max_force == 0.0


def test_cubic_and_hexagonal_copper_with_relaxed_and_clamped_ions():
    """EMT Cu: fcc's constants have cubic symmetry (C11 = C22 = C33, C12 = C13 = C23,
    C44 = C55 = C66, the rest below 0.05 GPa) and the bulk modulus of its equation of state
    (0.2 %); hcp's obey C66 = (C11 - C12) / 2 (1 %) with relaxed and with clamped ions,
    which differ there (the atoms move inside a sheared hexagonal cell: C66 52 against
    69 GPa)."""
    fcc = relaxed(bulk("Cu", "fcc", a=3.6, cubic=True))
    result = elastic_constants(fcc, EMT())
    c = result.constants
    assert np.ptp(np.diag(c)[:3]) < 0.05 and np.ptp(np.diag(c)[3:]) < 0.05
    assert np.ptp([c[0, 1], c[0, 2], c[1, 2]]) < 0.05
    assert (
        np.abs(c[:3, 3:]).max() < 0.05 and np.abs(c[3:, 3:] - np.diag(np.diag(c)[3:])).max() < 0.05
    )
    volumes, energies = [], []
    for scale in np.linspace(0.99, 1.01, 9):
        strained = fcc.copy()
        strained.set_cell(fcc.cell.array * scale, scale_atoms=True)
        strained.calc = EMT()
        volumes.append(strained.get_volume())
        energies.append(strained.get_potential_energy())
    bulk_modulus = EquationOfState(volumes, energies).fit()[2] / units.GPa
    assert result.bulk_hill == pytest.approx(bulk_modulus, rel=2e-3)

    hcp = relaxed(bulk("Cu", "hcp", a=2.55, c=4.16))
    ions = elastic_constants(hcp, EMT())
    clamped = elastic_constants(hcp, EMT(), relax_ions=False)
    for run in (ions, clamped):
        c = run.constants
        assert c[5, 5] == pytest.approx((c[0, 0] - c[0, 1]) / 2, rel=1e-2)
    assert clamped.constants[5, 5] - ions.constants[5, 5] > 10.0
    assert ions.relaxed_ions and not clamped.relaxed_ions and ions.max_force < 1e-4


def test_cli_prints_and_writes_and_names_bad_input(emt_cu_model, tmp_path, capsys):
    """``equiforce elastic --relax``: a compressed crystal relaxed first, its matrix and
    moduli printed and in the JSON; bad strains and a molecule refused."""
    parser = argparse.ArgumentParser()
    elastic_cli.add_arguments(parser)
    write(tmp_path / "cu.xyz", bulk("Cu", "fcc", a=3.5))
    out = tmp_path / "out" / "elastic.json"
    argv = [emt_cu_model, str(tmp_path / "cu.xyz"), "--out", str(out)]
    assert elastic_cli.run(parser.parse_args([*argv, "--relax"])) == 0
    payload = json.loads(out.read_text())
    assert np.asarray(payload["constants"]).shape == (6, 6) and payload["stable"] is True
    assert payload["bulk_hill"] > 50.0 and payload["formula"] == "Cu"
    assert out.with_suffix(".xyz").exists()
    printed = capsys.readouterr().out
    assert "relaxed in" in printed and "bulk modulus   Voigt" in printed
    with pytest.raises(ValueError, match="give two or more distinct, non-zero ones"):
        elastic_cli.run(parser.parse_args([*argv, "--strains", "0.01", "0.01"]))
    cluster = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    cluster.pbc = False
    write(tmp_path / "cluster.xyz", cluster)
    argv[1] = str(tmp_path / "cluster.xyz")
    with pytest.raises(ValueError, match="need a crystal periodic in 3D"):
        elastic_cli.run(parser.parse_args(argv))
