"""Vibrational analysis (``equiforce.md.vibrations``, ``equiforce vibrations``): the exact
Hessian's internal modes equal ASE's finite-displacement ``Vibrations``, the rigid-body
motions are projected out exactly (frequencies independent of orientation, a dimer's one
mode its bond's curvature), the thermochemistry is ASE's, a transition state shows its one
imaginary mode, an adsorbate on a fixed slab vibrates alone."""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import fcc111
from ase.cluster import Icosahedron
from ase.constraints import FixAtoms
from ase.io import write
from ase.thermochemistry import HarmonicThermo, IdealGasThermo
from ase.vibrations import Vibrations, VibrationsData

from equiforce.cli import vibrations as vibrations_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.neb import interpolated_band, run_neb
from equiforce.md.relax import relax_structure
from equiforce.md.vibrations import (
    PLANCK_EV_S,
    thermochemistry,
    transition_rates,
    vibrations,
)
from equiforce.testing.structures import vacancy_hop


@pytest.fixture(scope="module")
def calculator(emt_cu_model):
    return EquiforceCalculator(emt_cu_model)


@pytest.fixture(scope="module")
def cluster(calculator):
    """A Cu13 icosahedron relaxed to 1e-5 eV/Å."""
    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.02, seed=1)
    return relax_structure(atoms, calculator, fmax=1e-5, optimizer="bfgs").atoms


@pytest.fixture(scope="module")
def hop(calculator):
    """The vacancy hop's climbing band (3 images, 1e-3 eV/Å) between relaxed end points."""
    ends = [
        relax_structure(end, calculator, fmax=1e-4, optimizer="bfgs").atoms
        for end in vacancy_hop("Cu", 3.6)
    ]
    return run_neb(interpolated_band(*ends, 3), calculator, fmax=1e-3, steps=1000)


def test_internal_modes_equal_finite_displacements_and_their_thermochemistry(
    calculator, cluster, tmp_path
):
    """Cu13: 6 rigid-body motions out, the 33 internal quanta equal ASE's ``Vibrations``
    (4 displacements of 5 mÅ per component) to 1e-4 cm^-1 (measured 5e-6); the ideal-gas
    enthalpy, entropy and Gibbs energy equal ASE's ``IdealGasThermo`` on those (1e-7 eV);
    the zero-point energy is half the quanta."""
    result = vibrations(cluster, calculator)
    assert result.rigid_body == 6 and result.geometry == "nonlinear"
    assert len(result.energies) == 33 and result.imaginary_modes == 0
    atoms = cluster.copy()
    atoms.calc = calculator
    reference = Vibrations(atoms, name=str(tmp_path / "vib"), delta=0.005, nfree=4)
    reference.run()
    theirs = np.sort(reference.get_energies().real)[6:]
    assert np.abs(result.energies.real - theirs).max() / units.invcm < 1e-4
    assert result.zero_point_energy == pytest.approx(theirs.sum() / 2, abs=1e-8)

    thermo = thermochemistry(result, cluster, [100.0, 298.15], symmetry_number=12)
    gas = IdealGasThermo(
        theirs, "nonlinear", result.potential_energy, cluster, symmetrynumber=12, spin=0
    )
    for index, temperature in enumerate((100.0, 298.15)):
        assert thermo.enthalpy[index] == pytest.approx(
            gas.get_enthalpy(temperature, verbose=False), abs=1e-7
        )
        assert thermo.free_energy[index] == pytest.approx(
            gas.get_gibbs_energy(temperature, 101325.0, verbose=False), abs=1e-7
        )
    assert thermo.model == "ideal-gas"


def test_rigid_body_motions_are_projected_out_exactly(calculator, cluster):
    """Off the minimum (forces ~0.03 eV/Å), the raw Hessian gives the rotations imaginary
    frequencies (~3i cm^-1) and its internal modes depend on the orientation; projected, the
    internal modes of the cluster and of its rotated copy agree to 1e-8 cm^-1. A Cu dimer:
    5 motions out, its one mode sqrt(E''(r) / mu) (central differences, 1e-3 cm^-1); one
    atom: 3 out, no mode."""
    off = cluster.copy()
    off.positions[0] += [0.01, -0.004, 0.006]
    result = vibrations(off, calculator)
    assert result.max_force > 0.01 and result.rigid_body == 6
    raw = VibrationsData.from_2d(off, calculator.get_hessian(off)).get_frequencies()
    assert np.abs(raw[:6]).max() > 1.0  # the rotations, unprojected
    turned = off.copy()
    turned.rotate(37, (1, 2, 3), center="COM")
    np.testing.assert_allclose(
        vibrations(turned, calculator).frequencies, result.frequencies, atol=1e-8
    )

    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0.4, 2.2]])
    dimer = relax_structure(dimer, calculator, fmax=1e-6, optimizer="bfgs").atoms
    result = vibrations(dimer, calculator)
    assert result.rigid_body == 5 and result.geometry == "linear"
    bond = dimer.positions[1] - dimer.positions[0]
    length, unit, step = np.linalg.norm(bond), bond / np.linalg.norm(bond), 1e-4

    def energy(r: float) -> float:
        stretched = dimer.copy()
        stretched.positions[1] = dimer.positions[0] + unit * r
        stretched.calc = calculator
        return stretched.get_potential_energy()

    curvature = (energy(length + step) - 2 * energy(length) + energy(length - step)) / step**2
    reduced = dimer.get_masses()[0] / 2
    quantum = np.sqrt(curvature / reduced) * units._hbar * 1e10 / np.sqrt(units._e * units._amu)
    assert result.frequencies[0] == pytest.approx(quantum / units.invcm, abs=1e-3)
    single = vibrations(Atoms("Cu", positions=[[0, 0, 0]]), calculator)
    assert single.rigid_body == 3 and single.geometry == "monatomic" and len(single.energies) == 0


def test_adsorbate_on_a_fixed_slab_and_a_transition_state(calculator, emt_cu_model, hop, tmp_path):
    """A Cu adatom on a fixed Cu(111) slab: its 3 modes alone, the eigenvalues of its own
    3 x 3 block (nothing projected), harmonic thermochemistry. The vacancy hop's saddle
    (climbing NEB) has exactly one imaginary mode; ``--transition-state`` leaves it out of the
    thermochemistry, without it the command refuses naming the mode; the command writes the
    JSON and the modes."""
    slab = fcc111("Cu", size=(2, 2, 2), a=3.6, vacuum=6.0)
    slab.set_constraint(FixAtoms(indices=range(len(slab))))
    adatom = slab.positions[-1] + [0.0, 0.0, 2.1]
    system = slab + Atoms("Cu", positions=[adatom])
    system.set_constraint(FixAtoms(indices=range(len(slab))))
    system = relax_structure(system, calculator, fmax=1e-5, optimizer="bfgs").atoms
    result = vibrations(system, calculator)
    assert result.rigid_body == 0 and len(result.energies) == 3 and result.geometry is None
    block = calculator.get_hessian(system, rows_of=[len(slab)])[:, -3:]
    expected = np.sqrt(np.linalg.eigvalsh(block) / system.get_masses()[-1])
    expected *= units._hbar * 1e10 / np.sqrt(units._e * units._amu)
    np.testing.assert_allclose(result.energies.real, expected, rtol=1e-10)
    assert thermochemistry(result, system, [300.0]).model == "harmonic"

    band = hop
    write(tmp_path / "band.xyz", band.images)
    parser = argparse.ArgumentParser()
    vibrations_cli.add_arguments(parser)
    argv = [emt_cu_model, f"{tmp_path / 'band.xyz'}@{band.saddle}", "--out", str(tmp_path / "v")]
    assert vibrations_cli.run(parser.parse_args([*argv, "--transition-state"])) == 0
    summary = json.loads((tmp_path / "v" / vibrations_cli.SUMMARY_NAME).read_text())
    assert summary["imaginary_modes"] == 1 and summary["rigid_body_modes"] == 3
    assert summary["frequencies_cm-1"][0] < -50 and summary["frequencies_cm-1"][1] > 0
    assert summary["thermochemistry"]["model"] == "harmonic"
    saddle = vibrations(band.images[band.saddle], calculator)
    reference = HarmonicThermo(saddle.energies[1:].real, saddle.potential_energy)
    assert summary["thermochemistry"]["free_energy_eV"][0] == pytest.approx(
        reference.get_helmholtz_energy(298.15, verbose=False), abs=1e-6
    )
    assert (tmp_path / "v" / vibrations_cli.MODES_NAME).stat().st_size > 0
    with pytest.raises(ValueError, match="1 imaginary modes .* a minimum has none"):
        vibrations_cli.run(parser.parse_args(argv))
    with pytest.raises(ValueError, match="temperatures must be > 0 K"):
        vibrations_cli.run(parser.parse_args([*argv, "--temperatures", "0"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vibrations_cli.run(parser.parse_args([emt_cu_model, str(tmp_path / "none.xyz")]))


def test_transition_rates_are_harmonic_transition_state_theorys(calculator, hop):
    """The vacancy hop: the classical rate is Vineyard's prefactor (the minimum's 90
    frequencies over the saddle's 89 real ones, from the frequencies in cm^-1) times the Arrhenius
    factor; the quantum rate is kT/h exp(-dF/kT) with ASE's ``HarmonicThermo`` free energies
    (1e-10); it exceeds the classical one at 300 K (zero-point energy) and meets it at 5000 K
    (1e-3); a minimum is no saddle point."""
    minimum = vibrations(hop.images[0], calculator)
    saddle = vibrations(hop.images[hop.saddle], calculator)
    temperatures = [300.0, 5000.0]
    rates = transition_rates(minimum, saddle, temperatures)
    hertz = units._c * 100  # Hz per cm^-1
    prefactor = np.exp(
        np.log(minimum.frequencies * hertz).sum() - np.log(saddle.frequencies[1:] * hertz).sum()
    )
    assert rates.prefactor == pytest.approx(prefactor, rel=1e-9)
    assert rates.barrier == pytest.approx(hop.forward_barrier, abs=1e-3)
    thermal = units.kB * np.array(temperatures)
    np.testing.assert_allclose(
        rates.classical, prefactor * np.exp(-rates.barrier / thermal), rtol=1e-9
    )
    for index, temperature in enumerate(temperatures):
        difference = HarmonicThermo(
            saddle.energies[1:].real, saddle.potential_energy
        ).get_helmholtz_energy(temperature, verbose=False) - HarmonicThermo(
            minimum.energies.real, minimum.potential_energy
        ).get_helmholtz_energy(temperature, verbose=False)
        expected = thermal[index] / PLANCK_EV_S * np.exp(-difference / thermal[index])
        assert rates.quantum[index] == pytest.approx(expected, rel=1e-10)
    assert rates.quantum[0] > rates.classical[0]
    assert rates.quantum[1] == pytest.approx(rates.classical[1], rel=1e-3)
    with pytest.raises(ValueError, match="first-order saddle point \\(has 0\\)"):
        transition_rates(minimum, minimum, temperatures)


def test_cli_spin_is_the_multiplicity_the_ideal_gas_and_the_model_share(
    emt_cu_model, cluster, tmp_path
):
    """``equiforce vibrations --spin M`` is the structure's spin multiplicity, as a
    charge-aware model reads it; the ideal gas's electronic entropy is k ln M (S = (M-1)/2):
    a doublet's entropy exceeds the singlet's by k ln 2, a multiplicity below 1 is named."""
    write(tmp_path / "cu13.xyz", cluster)
    parser = argparse.ArgumentParser()
    vibrations_cli.add_arguments(parser)
    entropies = {}
    for multiplicity in ("1", "2"):
        out = tmp_path / f"spin{multiplicity}"
        argv = [emt_cu_model, str(tmp_path / "cu13.xyz"), "--out", str(out)]
        with (
            pytest.warns(UserWarning, match="does not condition")
            if multiplicity == "2"
            else (contextlib.nullcontext())
        ):
            assert vibrations_cli.run(parser.parse_args([*argv, "--spin", multiplicity])) == 0
        summary = json.loads((out / vibrations_cli.SUMMARY_NAME).read_text())
        entropies[multiplicity] = summary["thermochemistry"]["entropy_eV_per_K"][0]
    assert entropies["2"] - entropies["1"] == pytest.approx(units.kB * np.log(2), rel=1e-9)
    with pytest.raises(ValueError, match=r"--spin 0.5: the spin multiplicity 2S\+1, >= 1"):
        vibrations_cli.run(parser.parse_args([*argv, "--spin", "0.5"]))
