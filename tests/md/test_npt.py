"""NPT in ``run_md`` and ``equiforce md``: a compressed Cu cell under an EMT-trained model
expands to the target pressure (MTK, Berendsen); volume and pressure are recorded and drawn."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.fd import calculate_numerical_stress
from ase.io import write
from ase.md.velocitydistribution import thermalize_momenta
from scipy.spatial.transform import Rotation

from equiforce.cli import md as md_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.crescale import (
    CRescaleCoupling,
    StochasticCellRescalingNPT,
    cell_deformations,
)
from equiforce.md.dynamics import NPTSettings, run_md
from equiforce.md.report import format_md_summary, plot_md
from equiforce.md.sampling import barostat_pressure_GPa
from equiforce.testing.calculators import ElasticCell
from equiforce.testing.structures import make_molecule


def compressed_cu():
    """32-atom fcc Cu at a = 3.55 Å: ~4.5 GPa under the model (equilibrium a ~ 3.60 Å)."""
    return bulk("Cu", "fcc", a=3.55, cubic=True) * (2, 2, 2)


def second_half(values: np.ndarray) -> np.ndarray:
    """The samples after the first half of the run (the equilibration)."""
    return values[len(values) // 2 :]


def run_npt(model_file: str, n_steps: int, settings: NPTSettings):
    """100 K NPT of ``compressed_cu`` with 2 fs steps, sampled every 5 steps."""
    return run_md(
        compressed_cu(),
        EquiforceCalculator(model_file),
        ensemble="npt",
        temperature_K=100.0,
        timestep_fs=2.0,
        n_steps=n_steps,
        log_interval=5,
        seed=1,
        npt=settings,
    )


def test_berendsen_npt_relaxes_to_the_target_pressure(emt_cu_model, tmp_path):
    settings = NPTSettings(
        pressure_GPa=0.0, barostat="berendsen", barostat_time_fs=50.0, thermostat_time_fs=50.0
    )
    result = run_npt(emt_cu_model, 150, settings)
    assert result.pressure_GPa[0] > 3.0  # starts far from the target
    assert abs(second_half(result.pressure_GPa).mean() - 0.0) < 0.3
    assert second_half(result.pressure_GPa).std() < 0.5
    assert result.volume_A3[-1] > 1.03 * result.volume_A3[0]
    assert abs(second_half(result.temperature_K).mean() - 100.0) < 30.0
    summary = result.summary()
    assert summary["barostat"] == "berendsen" and summary["pressure_target_GPa"] == 0.0
    assert len(summary["pressure_GPa"]) == len(summary["volume_A3"]) == len(result.time_fs)
    assert "pressure (GPa)" in format_md_summary(result)
    assert plot_md(result, tmp_path / "npt.png").stat().st_size > 0


class FreeParticles(Calculator):
    """No interactions: zero energy, forces and stress (an ideal gas)."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        zeros = np.zeros((len(self.atoms), 3))
        self.results = {"energy": 0.0, "forces": zeros, "stress": np.zeros(6)}


def test_stochastic_cell_rescaling_samples_the_ideal_gas_volume():
    """64 free Ar atoms at 300 K and 0.1 GPa (barostat 100 fs, the coupling compressibility
    the gas's own 1/P0, 8000 steps of 5 fs): the volume's mean and spread are the
    isothermal-isobaric ensemble's, (N + 1) kT / P0 and sqrt(N + 1) kT / P0 (within 5 % and
    15 %; measured over four seeds: 0.2-2 % and 1-3 %), where Berendsen's coupling holds
    the volume still; and a compressed Cu cell (EMT) relaxes to 0 GPa (from ~5 GPa; over six
    seeds its second half averaged -0.4 to 0.3 GPa)."""
    from ase.calculators.emt import EMT

    n, temperature_K, pressure_GPa = 64, 300.0, 0.1
    kT, pressure = units.kB * temperature_K, pressure_GPa * units.GPa
    mean, spread = (n + 1) * kT / pressure, np.sqrt(n + 1) * kT / pressure
    generator = np.random.default_rng(0)
    box = np.eye(3) * mean ** (1 / 3)
    gas = Atoms(f"Ar{n}", scaled_positions=generator.random((n, 3)), cell=box, pbc=True)
    settings = dict(ensemble="npt", temperature_K=temperature_K, timestep_fs=5.0, seed=2)
    couplings = dict(pressure_GPa=pressure_GPa, compressibility_per_GPa=1 / pressure_GPa)
    couplings.update(barostat_time_fs=100.0, thermostat_time_fs=100.0)
    npt = NPTSettings(barostat="c-rescale", **couplings)
    volumes = run_md(gas, FreeParticles(), npt=npt, n_steps=8000, log_interval=5, **settings)
    volumes = volumes.volume_A3[100:]
    assert abs(volumes.mean() / mean - 1) < 0.05
    assert abs(volumes.std() / spread - 1) < 0.15
    berendsen = NPTSettings(barostat="berendsen", **couplings)
    held = run_md(gas, FreeParticles(), npt=berendsen, n_steps=500, log_interval=5, **settings)
    assert held.volume_A3[50:].std() < 0.01 * spread

    npt = NPTSettings(barostat="c-rescale", barostat_time_fs=50.0, thermostat_time_fs=50.0)
    cell = {**settings, "temperature_K": 100.0, "timestep_fs": 2.0}
    result = run_md(compressed_cu(), EMT(), npt=npt, n_steps=300, log_interval=5, **cell)
    assert result.pressure_GPa[0] > 3.0  # the cell's own fluctuations: ~0.7 GPa (32 atoms)
    assert abs(second_half(result.pressure_GPa).mean()) < 0.6
    assert result.volume_A3[-1] > 1.03 * result.volume_A3[0]
    assert result.summary()["barostat"] == "c-rescale"


FRACTIONS = np.random.default_rng(0).random((8, 3))  # the elastic cells' free particles


def elastic_cell_samples(
    cell: np.ndarray,
    calculator: ElasticCell,
    mask: tuple[bool, bool, bool] | None = None,
    couple: str | None = None,
) -> list[np.ndarray]:
    """The cells of 12000 anisotropic stochastic cell rescaling steps of 5 fs (barostat 100
    fs, thermostat 50 fs, 300 K, 0 GPa, the coupling compressibility 3 / (2 shear)) of 8
    free particles in ``cell`` under ``calculator``, with ``mask`` and ``couple``."""
    gas = Atoms("Ar8", scaled_positions=FRACTIONS, cell=cell, pbc=True)
    gas.calc = calculator
    thermalize_momenta(gas, temperature_K=300.0, rng=np.random.default_rng(1))
    dynamics = StochasticCellRescalingNPT(
        gas,
        5 * units.fs,
        300.0,
        pressure_au=0.0,
        taut=50 * units.fs,
        taup=100 * units.fs,
        compressibility_au=1 / (2 * calculator.shear / 3),
        rng=np.random.default_rng(2),
        anisotropic=True,
        mask=mask,
        couple=couple,
    )
    cells = []
    dynamics.attach(lambda: cells.append(gas.cell.array.copy()), interval=1)
    dynamics.run(12000)
    return cells


def test_anisotropic_stochastic_cell_rescaling_samples_the_cell_fluctuations():
    """8 free particles in a cell of St Venant-Kirchhoff energy (Lame constants 0.1 eV/Å^3,
    V0 = 1000 Å^3) at 0 GPa and 300 K, from a sheared and stretched cell: the strain relaxes
    to zero and fluctuates as the NPT ensemble's ``<e_ij e_kl> = kT / V0 S_ijkl`` (S the
    compliance; a Monte Carlo sampling of the cell's Boltzmann distribution gave it to
    0.3 %): the normal and the shear strains' variances (means of three) within 12 %, the
    normal strains' covariances (mean of three) within 25 %, the volume's variance within
    20 % (12000 steps of 5 fs, barostat 100 fs, whose first-order steps add ~2.5 % to the
    shape's variances and ~6 % to the volume's; over eight seeds: 0.97-1.06, 0.95-1.07,
    0.84-1.12, 0.99-1.13). A triclinic cell in any orientation keeps its frame: it stays its
    lower-triangular form times the same rotation."""
    lame = shear = 0.1
    reference = np.eye(3) * 10.0
    calculator = ElasticCell(reference, lame, shear)
    strained = Atoms("Ar", cell=reference @ (np.eye(3) + 0.03 * np.arange(9).reshape(3, 3)))
    strained.pbc, strained.calc = True, calculator
    numeric = calculate_numerical_stress(strained, force_consistent=False)
    np.testing.assert_allclose(numeric, strained.get_stress(), rtol=0, atol=1e-9)

    deformed = np.array([[1.03, 0.0, 0.0], [0.02, 0.97, 0.0], [-0.03, 0.01, 1.0]])
    cells = elastic_cell_samples(reference @ deformed, calculator)
    kT, volume0 = units.kB * 300.0, 1000.0
    assert len(cells) > 12000 and cells[0][0, 1] == cells[0][0, 2] == cells[0][1, 2] == 0
    deformations = np.linalg.solve(reference, np.array(cells[1000:]))
    strains = (deformations @ deformations.transpose(0, 2, 1) - np.eye(3)) / 2
    assert np.abs(strains.mean(axis=0)).max() < 0.005  # from 0.03
    normal = strains[:, [0, 1, 2], [0, 1, 2]]
    normal = normal - normal.mean(axis=0)
    s11 = (lame + shear) / (shear * (3 * lame + 2 * shear))
    s12 = -lame / (2 * shear * (3 * lame + 2 * shear))
    assert abs((normal**2).mean() / (kT / volume0 * s11) - 1) < 0.12
    pairs = normal * np.roll(normal, 1, axis=1)
    assert abs(pairs.mean() / (kT / volume0 * s12) - 1) < 0.25
    shears = strains[:, [0, 0, 1], [1, 2, 2]]
    assert abs((shears**2).mean() / (kT / (4 * shear * volume0)) - 1) < 0.12
    volumes = np.abs(np.linalg.det(np.array(cells[1000:])))
    assert abs(volumes.var() / (kT * volume0 / (lame + 2 * shear / 3)) - 1) < 0.2
    assert np.abs(np.triu(np.array(cells[-1]), 1)).max() == 0  # no rotation

    frame = Rotation.from_rotvec([0.3, -0.5, 0.9]).as_matrix()
    triclinic = Atoms("Ar8", scaled_positions=FRACTIONS, cell=reference @ deformed @ frame.T)
    triclinic.pbc = True
    npt = NPTSettings(barostat="c-rescale", anisotropic=True, barostat_time_fs=100.0)
    settings = dict(ensemble="npt", temperature_K=300.0, timestep_fs=5.0, seed=3, npt=npt)
    rotated = ElasticCell(reference @ frame.T, lame, shear)
    result = run_md(triclinic, rotated, n_steps=60, log_interval=60, **settings)
    final = result.final_atoms.cell.array
    assert np.abs(np.triu(final @ frame, 1)).max() < 1e-12
    assert np.abs(final @ frame - reference @ deformed).max() > 1e-3  # moved


@pytest.mark.parametrize(
    "mask, couple, groups",
    [((True, False, True), None, [[0], [2]]), ((True, True, True), "ab", [[0, 1], [2]])],
    ids=["a-and-c-free", "ab-coupled-c-free"],
)
def test_a_masked_step_is_driven_by_the_energy_derivative_along_each_free_vector(
    mask, couple, groups
):
    """Without noise (kT -> 0) a masked step moves each free log-length eps_a = ln |h_a| by
    ``beta_T / (3 tau_p) dt (P_g - P0)`` to first order in dt, P_g the mean over its
    coupled group of ``-dE/d eps_a / V``: the pressure along a vector of a sheared cell,
    ``(h P h^-1)_aa``, against central differences of the elastic cell's energy (5e-5
    relative; ``P_aa``, the pressure along the Cartesian axis, is 15-25 % off here). A held
    vector keeps its length, every vector its direction, coupled ones scale alike."""
    cell = np.array([[10.3, 0.0, 0.0], [1.2, 9.7, 0.0], [-0.8, 1.5, 10.2]])
    atoms = Atoms("Ar", cell=cell, pbc=True)
    atoms.calc = ElasticCell(np.eye(3) * 10.0, 0.1, 0.1)
    pressure = -atoms.get_stress(voigt=False)

    def energy_along(axis: int, step: float) -> float:
        scaled = cell.copy()
        scaled[axis] *= np.exp(step)
        atoms.set_cell(scaled)
        return atoms.get_potential_energy()

    forces = np.array([(energy_along(a, -1e-6) - energy_along(a, 1e-6)) / 2e-6 for a in range(3)])
    target, volume = 2e-3, abs(np.linalg.det(cell))
    coupling = CRescaleCoupling(0.01, 1.0, 100.0, 50.0, True, mask, couple)
    assert [list(group) for group in coupling.groups] == groups
    deformation = cell_deformations(
        pressure[None],
        np.array([target]),
        cell[None],
        np.array([1e-30]),
        [np.random.default_rng(0)],
        coupling,
    )[0]
    moved = cell @ deformation
    logs = np.log(np.linalg.norm(moved, axis=1) / np.linalg.norm(cell, axis=1))
    expected = np.zeros(3)
    for group in groups:
        expected[group] = 50.0 / (3 * 100.0) * 0.01 * (forces[group].mean() / volume - target)
    np.testing.assert_allclose(logs, expected, rtol=5e-5, atol=0)
    assert abs(pressure[0, 0] / (forces[0] / volume) - 1) > 0.03
    directions = moved / np.linalg.norm(moved, axis=1)[:, None]
    np.testing.assert_allclose(directions, cell / np.linalg.norm(cell, axis=1)[:, None], atol=1e-14)


def test_masked_stochastic_cell_rescaling_samples_the_free_lengths():
    """The elastic cell of the anisotropic test (8 free particles, Lame constants 0.1
    eV/Å^3, V0 = 1000 Å^3, 0 GPa, 300 K) with a and b free and c held stretched by 2 %: the
    free lengths' strains relax to the Poisson contraction -lambda 0.02 / (2 lambda + 2 mu)
    = -0.005 and fluctuate as the ensemble's ``kT / V0 K^-1`` (K the 2 x 2 stiffness of the
    free strains at fixed c and angles): variances (mean of two) within 12 %, covariance
    within 30 % (12000 steps of 5 fs; over four seeds 1.01-1.08 and 0.86-1.18; with c
    free alone, its variance 0.95-1.09 of ``kT / (V0 (lambda + 2 mu))``). c and every angle
    stay exactly; a rotated triclinic cell under ``run_md`` keeps each vector's direction
    and c's length, a and b move."""
    lame = shear = 0.1
    reference = np.eye(3) * 10.0
    held = np.diag([1.03, 0.97, 1.02])
    calculator = ElasticCell(reference, lame, shear)
    cells = np.array(elastic_cell_samples(reference @ held, calculator, (True, True, False))[1000:])
    assert np.array_equal(cells[:, 2], np.broadcast_to((reference @ held)[2], (len(cells), 3)))
    assert np.abs(cells[:, [0, 0, 1, 1], [1, 2, 0, 2]]).max() == 0  # the angles
    strains = np.linalg.norm(cells[:, :2], axis=2) / 10.0 - 1
    assert np.abs(strains.mean(axis=0) + lame * 0.02 / (2 * lame + 2 * shear)).max() < 0.0015
    kT, volume0 = units.kB * 300.0, 1000.0
    stiffness = lame * np.ones((2, 2)) + 2 * shear * np.eye(2)
    expected, measured = kT / volume0 * np.linalg.inv(stiffness), np.cov(strains.T)
    assert abs(np.diag(measured).mean() / expected[0, 0] - 1) < 0.12
    assert abs(measured[0, 1] / expected[0, 1] - 1) < 0.3

    frame = Rotation.from_rotvec([0.3, -0.5, 0.9]).as_matrix()
    sheared = np.array([[1.03, 0.0, 0.0], [0.02, 0.97, 0.0], [-0.03, 0.01, 1.0]])
    start = reference @ sheared @ frame.T
    triclinic = Atoms("Ar8", scaled_positions=FRACTIONS, cell=start, pbc=True)
    npt = NPTSettings(
        barostat="c-rescale",
        anisotropic=True,
        cell_mask=(True, True, False),
        barostat_time_fs=100.0,
    )
    settings = dict(ensemble="npt", temperature_K=300.0, timestep_fs=5.0, seed=3, npt=npt)
    rotated = ElasticCell(reference @ frame.T, lame, shear)
    result = run_md(triclinic, rotated, n_steps=60, log_interval=60, **settings)
    summary = format_md_summary(result)
    assert "c-rescale, anisotropic, cell vectors a b free\n" in summary
    assert "pressure along a b (GPa)" in summary
    final = result.final_atoms
    final.calc = rotated  # the recorded pressure: the mean along a and b, not hydrostatic
    along = barostat_pressure_GPa(final, (True, True, False))
    assert result.pressure_GPa[-1] == pytest.approx(along, rel=1e-9)
    assert abs(along - barostat_pressure_GPa(final)) > 0.01
    lengths = np.linalg.norm(final.cell.array, axis=1) / np.linalg.norm(start, axis=1)
    directions = final.cell.array / np.linalg.norm(final.cell.array, axis=1)[:, None]
    np.testing.assert_allclose(
        directions, start / np.linalg.norm(start, axis=1)[:, None], atol=1e-12
    )
    assert abs(lengths[2] - 1) < 1e-12 and np.abs(lengths[:2] - 1).min() > 1e-4


@pytest.mark.parametrize(
    "mask, couple", [((True, True, True), "ab"), ((True, False, True), None)], ids=str
)
def test_masked_steps_diffuse_each_group_as_its_coordinate(mask, couple):
    """At the target pressure (no drift) 20000 cells' steps: each group's coordinate
    x_g (its vectors' summed log-lengths, k_g of them) moves with variance ``2 kT beta_T
    k_g dt / (3 tau_p V)`` and independently of the others, its vectors by one factor: the
    covariances of ln s_a within 4 % (sampling: ~1 %); the group noise without its
    sqrt(k_g) weights is 20-30 % off."""
    n, kT, volume = 20000, 0.025, 1000.0
    coupling = CRescaleCoupling(0.01, 1.0, 100.0, 50.0, True, mask, couple)
    cells = np.broadcast_to(np.eye(3) * 10.0, (n, 3, 3))
    target = np.full(n, 1e-3)
    pressure = np.broadcast_to(np.eye(3) * (1e-3 + kT / (2 * volume)), (n, 3, 3))
    generators = [np.random.default_rng(seed) for seed in range(n)]
    deformations = cell_deformations(pressure, target, cells, np.full(n, kT), generators, coupling)
    logs = np.log(np.einsum("nii->ni", deformations))
    expected = np.zeros((3, 3))
    for group in coupling.groups:
        variance = 2 * kT * 50.0 * 0.01 / (3 * 100.0 * volume) / len(group)  # of ln s_a
        expected[np.ix_(group, group)] = variance
    measured = np.cov(logs.T)
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected))) + 1e-30
    np.testing.assert_allclose(measured / scale, expected / scale, rtol=0, atol=0.04)


def test_semi_isotropic_coupling_samples_the_plane_and_normal_strains():
    """``couple="ab"`` with every vector free (GROMACS's semi-isotropic coupling) on the
    elastic cell from a strained start: a and b keep their ratio to 1e-13 while the common
    in-plane strain e and c's strain e_c relax to zero and fluctuate as the ensemble's
    ``kT / V0 K^-1``, K = [[4 lambda + 4 mu, 2 lambda], [2 lambda, lambda + 2 mu]] (the
    energy's Hessian in (e, e_c)): variances within 15 %, covariance within 25 % (over five
    seeds 0.97-1.12 and 0.85-1.15)."""
    lame = shear = 0.1
    reference = np.eye(3) * 10.0
    calculator = ElasticCell(reference, lame, shear)
    start = reference @ np.diag([1.02, 1.02, 0.98])
    cells = np.array(elastic_cell_samples(start, calculator, (True, True, True), "ab")[1000:])
    lengths = np.linalg.norm(cells, axis=2)
    np.testing.assert_allclose(lengths[:, 0], lengths[:, 1], rtol=1e-13, atol=0)
    strains = lengths[:, [0, 2]] / 10.0 - 1
    assert np.abs(strains.mean(axis=0)).max() < 0.0015
    stiffness = np.array([[4 * lame + 4 * shear, 2 * lame], [2 * lame, lame + 2 * shear]])
    expected = units.kB * 300.0 / 1000.0 * np.linalg.inv(stiffness)
    measured = np.cov(strains.T)
    assert np.abs(np.diag(measured) / np.diag(expected) - 1).max() < 0.15
    assert abs(measured[0, 1] / expected[0, 1] - 1) < 0.25


def test_stochastic_cell_rescaling_moves_fixed_atoms_with_the_cell():
    """FixAtoms under C-rescale (a and b free, 32 Cu atoms under EMT at 300 K, the 8 lowest
    held): the held atoms keep their fractional coordinates (1e-12) and stay at rest while
    the cell and the free atoms move, and the thermostat counts the free atoms' degrees of
    freedom only: their mean temperature is the target (within 15 %; counting the held
    atoms' too reads 42 % high). Held by ASE's FixAtoms instead (absolute positions), they
    would not follow the cell. Another constraint is refused by name."""
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms, FixCom

    atoms = compressed_cu()
    held = np.argsort(atoms.positions[:, 2])[:8]
    atoms.set_constraint(FixAtoms(indices=held))
    start = atoms.get_scaled_positions()[held]
    npt = NPTSettings(
        barostat="c-rescale",
        anisotropic=True,
        cell_mask=(True, True, False),
        barostat_time_fs=100.0,
        thermostat_time_fs=20.0,
    )
    settings = dict(ensemble="npt", temperature_K=300.0, timestep_fs=2.0, seed=4, npt=npt)
    result = run_md(atoms, EMT(), n_steps=600, log_interval=5, **settings)
    final = result.final_atoms
    assert abs(final.cell[0, 0] / atoms.cell[0, 0] - 1) > 1e-3
    assert final.cell[2, 2] == atoms.cell[2, 2]
    np.testing.assert_allclose(final.get_scaled_positions()[held], start, rtol=0, atol=1e-12)
    assert np.abs(final.get_momenta()[held]).max() == 0
    moving = np.setdiff1d(np.arange(len(atoms)), held)
    moved = final.get_scaled_positions()[moving] - atoms.get_scaled_positions()[moving]
    assert np.abs(moved).max() > 1e-3
    assert abs(second_half(result.temperature_K).mean() / 300.0 - 1) < 0.15
    atoms.set_constraint(FixCom())
    with pytest.raises(ValueError, match=r"constraints \['FixCom'\]: stochastic cell rescaling"):
        run_md(atoms, EMT(), n_steps=2, log_interval=1, **settings)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_mtk_npt_oscillates_about_the_target_pressure(emt_cu_model, anisotropic):
    """MTK's barostat oscillates (period ~120 fs here); over >2 periods its mean is the target."""
    settings = NPTSettings(
        pressure_GPa=1.0,
        barostat="mtk",
        anisotropic=anisotropic,
        barostat_time_fs=200.0,
        thermostat_time_fs=50.0,
    )
    result = run_npt(emt_cu_model, 300, settings)
    assert result.pressure_GPa[0] > 3.0
    assert abs(second_half(result.pressure_GPa).mean() - 1.0) < 0.5
    assert result.volume_A3.max() > 1.02 * result.volume_A3[0]
    cell = result.final_atoms.cell.array
    if not anisotropic:  # uniform scaling keeps the cubic cell cubic
        np.testing.assert_allclose(cell, np.diag([cell[0, 0]] * 3), atol=1e-9)


@pytest.mark.parametrize("integrator", ["nvt-chain", "mtk", "mtk-anisotropic"])
def test_a_moved_target_is_the_integrator_built_at_it(integrator):
    """``set_temperature`` of ``run_md``'s Nosé–Hoover integrators (NVT chain, MTK isotropic
    and anisotropic) from 300 to 900 K leaves every number of the integrator and its chains
    (kT, the chains' and the cell momenta's virtual masses) as ASE's integrator built at
    900 K has them: the masses follow the target, as LAMMPS's ramps."""
    from ase.calculators.emt import EMT
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT

    from equiforce.md.nose_hoover import (
        FixedAtomsNoseHooverChainNVT,
        IsotropicMTKNPTRamp,
        MTKNPTRamp,
    )
    from equiforce.md.restart import numeric_state

    atoms = compressed_cu()
    atoms.calc = EMT()
    dt, tdamp, pdamp = units.fs, 20 * units.fs, 200 * units.fs
    barostat = dict(pressure_au=1e-3, tdamp=tdamp, pdamp=pdamp)
    ramped, built = {
        "nvt-chain": (FixedAtomsNoseHooverChainNVT, FixedAtomsNoseHooverChainNVT),
        "mtk": (IsotropicMTKNPTRamp, IsotropicMTKNPT),
        "mtk-anisotropic": (MTKNPTRamp, MTKNPT),
    }[integrator]
    arguments = dict(tdamp=tdamp) if integrator == "nvt-chain" else barostat
    moved = ramped(atoms, dt, temperature_K=300.0, **arguments)
    moved.set_temperature(900.0)
    expected = numeric_state(built(atoms, dt, temperature_K=900.0, **arguments), "d")
    mine = numeric_state(moved, "d")
    assert sorted(mine) == sorted(expected) and any("._Q" in key for key in mine)
    for key, value in expected.items():
        np.testing.assert_allclose(mine[key], value, rtol=1e-14, atol=0, err_msg=key)


def test_mtk_npt_follows_a_temperature_ramp():
    """Isotropic MTK NPT of 32 Cu atoms (EMT) ramped from 300 to 1500 K over 300 steps of
    2 fs: the last 50 steps average above 1100 K and the cell expands beyond the one of the
    same run at a constant 300 K."""
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    npt = NPTSettings(barostat_time_fs=300.0, thermostat_time_fs=40.0)
    settings = dict(ensemble="npt", npt=npt, temperature_K=300.0, timestep_fs=2.0, seed=4)
    settings.update(n_steps=300, log_interval=10)
    ramped = run_md(atoms, EMT(), final_temperature_K=1500.0, **settings)
    constant = run_md(atoms, EMT(), **settings)
    late = ramped.time_fs >= 500.0
    assert ramped.temperature_K[late].mean() > 1100.0
    assert ramped.volume_A3[late].mean() > constant.volume_A3[late].mean() + 3.0
    assert ramped.summary()["temperature_final_target_K"] == 1500.0


def test_a_pressure_ramp_compresses_the_cell_and_is_a_setting_of_the_run(tmp_path):
    """32 Cu atoms (EMT) at 300 K under stochastic cell rescaling, the target ramped from 0 to
    20 GPa over 300 steps of 2 fs: over the last 50 steps the pressure follows the target
    (16.9 GPa against 18.3 on average: the barostat lags ~1.5 GPa) and the cell is smaller
    than the same run's at a constant 0 GPa; the result, summary and figure carry the ramp;
    a ramp outside NPT and the extension of a ramped run are refused."""
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    npt = NPTSettings(barostat="c-rescale", barostat_time_fs=100.0, thermostat_time_fs=50.0)
    settings = dict(ensemble="npt", npt=npt, temperature_K=300.0, timestep_fs=2.0, seed=3)
    settings.update(n_steps=300, log_interval=10)
    ramped = run_md(atoms, EMT(), final_pressure_GPa=20.0, **settings)
    constant = run_md(atoms, EMT(), **settings)
    late = ramped.time_fs >= 500.0
    lag = ramped.pressure_GPa[late] - ramped.target_pressure(ramped.time_fs[late])
    assert ramped.pressure_GPa[late].mean() > 14.0 and abs(lag.mean()) < 3.0
    assert ramped.volume_A3[late].mean() < constant.volume_A3[late].mean() - 10.0
    summary = ramped.summary()
    assert summary["pressure_target_GPa"] == 0.0 and summary["pressure_final_target_GPa"] == 20.0
    np.testing.assert_allclose(ramped.target_pressure(np.array([0.0, 300.0, 900.0])), [0, 10, 20])
    assert "(target 0 -> 20)" in format_md_summary(ramped)
    assert plot_md(ramped, tmp_path / "ramp.png").stat().st_size > 0
    with pytest.raises(ValueError, match="a pressure ramp is for NPT, not NVT"):
        run_md(atoms, EMT(), final_pressure_GPa=1.0, n_steps=2, log_interval=1)
    short = {**settings, "n_steps": 4, "log_interval": 2, "restart_path": tmp_path / "r.npz"}
    run_md(atoms, EMT(), final_pressure_GPa=5.0, **short)
    with pytest.raises(ValueError, match="started with pressure_ramp"):
        run_md(atoms, EMT(), final_pressure_GPa=5.0, **{**short, "n_steps": 8}, resume=True)


def test_npt_refuses_non_periodic_structures_and_bad_settings(emt_cu_model):
    one_step = {"n_steps": 1, "log_interval": 1}
    with pytest.raises(ValueError, match="periodic in 3D"):
        run_md(make_molecule(), EquiforceCalculator(emt_cu_model), ensemble="npt", **one_step)
    with pytest.raises(ValueError, match="ensemble='npt'"):
        run_md(compressed_cu(), EquiforceCalculator(emt_cu_model), npt=NPTSettings(), **one_step)
    with pytest.raises(ValueError, match="barostat_time_fs"):
        NPTSettings(barostat_time_fs=0.0)
    with pytest.raises(ValueError, match="barostat must be"):
        NPTSettings(barostat="parrinello")
    with pytest.raises(ValueError, match=r"cell_mask \(True, True, False\): three flags"):
        NPTSettings(cell_mask=(True, True, False))  # not anisotropic
    with pytest.raises(ValueError, match="three flags"):
        NPTSettings(anisotropic=True, cell_mask=(False, False, False))
    masked = dict(anisotropic=True, cell_mask=(True, True, False))
    for barostat, couple in (("mtk", "ab"), ("c-rescale", "ac"), ("c-rescale", "a")):
        with pytest.raises(ValueError, match=f"couple '{couple}': two or three of the free"):
            NPTSettings(barostat=barostat, couple=couple, **masked)
    with pytest.raises(ValueError, match=r"free cell vectors \(none: give cell_mask\)"):
        NPTSettings(barostat="c-rescale", anisotropic=True, couple="ab")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the ``md`` subcommand's options."""
    parser = argparse.ArgumentParser()
    md_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_md_npt_writes_volume_and_pressure(emt_cu_model, tmp_path):
    write(tmp_path / "start.xyz", compressed_cu())
    out = tmp_path / "run"
    argv = [emt_cu_model, str(tmp_path / "start.xyz"), "--steps", "6", "--log-interval", "3"]
    npt = ["--ensemble", "npt", "--pressure", "2", "--barostat", "berendsen", "--anisotropic"]
    npt += ["--pressure-end", "3", "--barostat-time", "80", "--cell-mask", "1", "0", "1"]
    assert md_cli.run(parse([*argv, *npt, "--out", str(out)])) == 0
    summary = json.loads((out / md_cli.SUMMARY_NAME).read_text())
    assert summary["ensemble"] == "npt" and summary["anisotropic"] is True
    assert summary["pressure_target_GPa"] == 2.0 and len(summary["volume_A3"]) == 3
    assert summary["pressure_final_target_GPa"] == 3.0
    assert summary["cell_mask"] == [True, False, True]
    with pytest.raises(ValueError, match="--pressure, --anisotropic need --ensemble npt"):
        md_cli.run(parse([*argv, "--pressure", "1", "--anisotropic"]))
    crescale = ["--ensemble", "npt", "--barostat", "c-rescale", "--anisotropic"]
    crescale += ["--cell-mask", "1", "1", "0", "--couple", "ab", "--out", str(tmp_path / "c")]
    assert md_cli.run(parse([*argv, *crescale])) == 0
    summary = json.loads((tmp_path / "c" / md_cli.SUMMARY_NAME).read_text())
    assert summary["barostat"] == "c-rescale" and summary["cell_mask"] == [True, True, False]
    assert summary["couple"] == "ab"
