"""``EquiforceCalculator``: agreement with the model, finite differences, loading, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError, compare_atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce.data import keys
from equiforce.md import EquiforceCalculator
from equiforce.md.committee import CommitteeCalculator
from equiforce.testing import checks
from equiforce.testing.models import tiny_allegro
from equiforce.testing.structures import (
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)
from equiforce.testing.tolerances import TOL

from .conftest import tiny_mace


def assert_close(actual, expected, tol, what: str) -> None:
    """``np.testing.assert_allclose`` with a named tolerance."""
    np.testing.assert_allclose(actual, expected, atol=tol.atol, rtol=tol.rtol, err_msg=what)


STRUCTURES = {
    "periodic": lambda: make_fcc_cu(repeat=1, seed=3),
    "triclinic": lambda: make_triclinic_cu(seed=4),
    "molecule": lambda: make_molecule("CH3CH2OH", seed=5),
}


def with_calculator(atoms: Atoms, calculator: EquiforceCalculator) -> Atoms:
    """A copy of ``atoms`` with ``calculator`` attached."""
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms


@pytest.mark.parametrize("kind", ["periodic", "molecule"])
def test_calculator_agrees_with_direct_model_call(model64, kind):
    atoms = with_calculator(STRUCTURES[kind](), EquiforceCalculator(model64))
    periodic = bool(atoms.pbc.all())
    direct = checks.predict(model64, [atoms], stress=periodic)
    assert_close(atoms.get_potential_energy(), direct[keys.ENERGY][0], TOL.fp64, "energy")
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    assert_close(atoms.get_forces(), direct[keys.FORCES], TOL.fp64, "forces")
    if periodic:
        assert_close(atoms.get_stress(voigt=False), direct[keys.STRESS][0], TOL.fp64, "stress")


# Atoms checked by finite differences: a Cu and an Au of the cell; C, O and an H of ethanol.
@pytest.mark.parametrize(("kind", "checked"), [("periodic", [0, 3]), ("molecule", [0, 2, 5])])
def test_forces_match_ase_finite_differences(model64, kind, checked):
    atoms = with_calculator(STRUCTURES[kind](), EquiforceCalculator(model64))
    analytic = atoms.get_forces()[checked]
    numerical = calculate_numerical_forces(atoms, eps=1e-4, iatoms=checked)
    assert np.abs(analytic).max() > 1e-3  # the check is not vacuous
    assert_close(analytic, numerical, TOL.finite_difference, "forces")


@pytest.mark.parametrize("kind", ["periodic", "triclinic"])
def test_stress_matches_ase_finite_differences(model64, kind):
    atoms = with_calculator(STRUCTURES[kind](), EquiforceCalculator(model64))
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert_close(atoms.get_stress(), numerical, TOL.finite_difference, "stress (Voigt)")


@pytest.mark.parametrize("make", [lambda: make_molecule("CH3CH2OH"), make_slab])
def test_stress_without_3d_periodicity_is_not_implemented(model64, make):
    atoms = with_calculator(make(), EquiforceCalculator(model64))
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="periodic in 3D"):
        atoms.get_stress()


def test_calculator_from_path_matches_calculator_from_object(model64, model_file):
    atoms = make_fcc_cu(repeat=1, seed=6)
    from_object = with_calculator(atoms, EquiforceCalculator(model64))
    from_path = with_calculator(atoms, EquiforceCalculator(model_file))
    assert_close(
        from_path.get_potential_energy(), from_object.get_potential_energy(), TOL.fp64, "energy"
    )
    assert_close(from_path.get_forces(), from_object.get_forces(), TOL.fp64, "forces")
    assert_close(from_path.get_stress(), from_object.get_stress(), TOL.fp64, "stress")


def test_energy_only_request_skips_forces_which_follow_on_demand(model64):
    atoms = with_calculator(make_fcc_cu(repeat=1, seed=9), EquiforceCalculator(model64))
    energy = atoms.get_potential_energy()
    assert "forces" not in atoms.calc.results
    direct = checks.predict(model64, [atoms])
    assert_close(atoms.get_forces(), direct[keys.FORCES], TOL.fp64, "forces")
    assert atoms.get_potential_energy() == energy


def test_once_stress_is_asked_for_forces_and_stress_come_from_one_call(model64):
    """NPT and cell filters ask for forces, then stress, of the same positions every step."""
    calculator = EquiforceCalculator(model64)
    calls = []
    model_call = calculator._call
    calculator._call = lambda batch, **kw: calls.append(kw) or model_call(batch, **kw)
    atoms = with_calculator(make_fcc_cu(repeat=1, seed=8), calculator)
    atoms.get_forces()
    assert not calls[-1]["compute_stress"]  # plain MD pays no stress
    atoms.get_stress()
    for step in range(2):
        atoms.positions[0] += [0.01, 0.0, -0.01]
        n_calls = len(calls)
        forces, stress = atoms.get_forces(), atoms.get_stress()
        assert len(calls) == n_calls + 1, f"step {step}: one model call for forces and stress"
        direct = checks.predict(model64, [atoms], stress=True)
        assert_close(forces, direct[keys.FORCES], TOL.fp64, "forces")
        assert_close(stress, full_3x3_to_voigt_6_stress(direct[keys.STRESS][0]), TOL.fp64, "stress")


def test_calculator_follows_position_changes(model64):
    atoms = with_calculator(make_fcc_cu(repeat=1, seed=7), EquiforceCalculator(model64))
    before = atoms.get_potential_energy()
    atoms.positions[0] += [0.05, -0.02, 0.01]
    after = atoms.get_potential_energy()
    direct = checks.predict(model64, [atoms])[keys.ENERGY][0]
    assert after != before
    assert_close(after, direct, TOL.fp64, "energy after a move")


def _changed(atoms: Atoms, change: str) -> Atoms:
    """A copy of ``atoms`` with one kind of change (``test_check_state_answers_as_ase_does``)."""
    atoms = atoms.copy()
    if change == "positions":
        atoms.positions[1] += [1e-3, 0.0, 0.0]
    elif change == "positions within ase's tolerance":
        atoms.positions[1, 0] = np.nextafter(atoms.positions[1, 0], np.inf)  # 1 ulp, < 1e-15
    elif change == "cell":
        atoms.set_cell(atoms.cell.array * 1.01)
    elif change == "pbc":
        atoms.pbc = [True, True, False]
    elif change == "numbers":
        atoms.numbers[0] = 28
    elif change == "charges added":
        atoms.set_initial_charges(np.zeros(len(atoms)))
    elif change == "an atom added":
        atoms += Atoms("Cu", positions=[[0.5, 0.5, 0.5]])
    elif change == "momenta":
        atoms.set_momenta(np.ones((len(atoms), 3)))
    return atoms


@pytest.mark.parametrize(
    "change",
    [
        "none",
        "positions",
        "positions within ase's tolerance",
        "cell",
        "pbc",
        "numbers",
        "charges added",
        "an atom added",
        "momenta",
    ],
)
@pytest.mark.parametrize("kind", ["single", "committee"])
def test_check_state_answers_as_ase_does(model64, change, kind):
    """The calculators' faster change check (``QuickChangeCheck``: bitwise-equal properties
    skipped) gives ASE's ``compare_atoms`` answer, and a changed structure is computed again."""
    if kind == "single":
        calculator = EquiforceCalculator(model64)
    else:
        calculator = CommitteeCalculator([model64, model64])
    atoms = with_calculator(make_fcc_cu(repeat=1, seed=6), calculator)
    atoms.get_potential_energy()
    other = _changed(atoms, change)
    assert calculator.check_state(other) == compare_atoms(calculator.atoms, other)
    if change in ("positions", "cell"):
        other.calc = calculator
        direct = checks.predict(model64, [other])[keys.ENERGY][0]
        assert_close(other.get_potential_energy(), direct, TOL.fp64, f"energy after {change}")


def test_dtype_option_casts_a_copy_and_leaves_the_callers_model_alone(model64):
    atoms = make_fcc_cu(repeat=1, seed=8)
    calculator = EquiforceCalculator(model64, dtype="float32")
    assert calculator.dtype == torch.float32
    assert model64.dtype == torch.float64
    low = with_calculator(atoms, calculator)
    high = with_calculator(atoms, EquiforceCalculator(model64))
    assert low.get_forces().dtype == np.float64
    assert_close(low.get_potential_energy(), high.get_potential_energy(), TOL.fp32, "energy")
    assert_close(low.get_forces(), high.get_forces(), TOL.fp32, "forces")


def test_float32_model_file_runs_in_float64_on_request(tmp_path):
    from equiforce.models import save_model

    path = tmp_path / "tiny32.pt"
    save_model(tiny_mace(torch.float32), path)
    assert EquiforceCalculator(path).dtype == torch.float32
    assert EquiforceCalculator(path, dtype=torch.float64).dtype == torch.float64


def test_unknown_element_error_names_the_element(model64):
    atoms = with_calculator(
        Atoms("Fe2", positions=[[0, 0, 0], [0, 0, 2.0]]), EquiforceCalculator(model64)
    )
    with pytest.raises(ValueError, match=r"element Fe .*unknown to the model"):
        atoms.get_potential_energy()


def test_bad_dtype_is_rejected(model64):
    with pytest.raises(ValueError, match="dtype must be one of"):
        EquiforceCalculator(model64, dtype="float16")


def test_calculator_is_importable_from_the_package_root():
    import equiforce

    assert equiforce.EquiforceCalculator is EquiforceCalculator


def test_compiled_calculator_matches_the_eager_one():
    """``compile`` (aot_eager: the same trace, no code generation) changes no number."""
    model = tiny_allegro(num_layers=1).to(torch.float64)
    eager = with_calculator(make_fcc_cu(repeat=1, seed=3), EquiforceCalculator(model))
    compiled = with_calculator(eager, EquiforceCalculator(model, compile="aot_eager"))
    for step in range(2):  # the second call reuses the first call's compiled trace
        for atoms in (eager, compiled):
            atoms.positions += 0.01 * step
        assert_close(
            compiled.get_potential_energy(), eager.get_potential_energy(), TOL.fp64, "energy"
        )
        assert_close(compiled.get_forces(), eager.get_forces(), TOL.fp64, "forces")
        assert_close(compiled.get_stress(), eager.get_stress(), TOL.fp64, "stress")
    assert len(compiled.calc._call._compiled) == 3  # energy; energy + forces; + stress


def _rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix (3, 3)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("family", ["mace", "allegro"])
def test_per_atom_energies_and_stresses_sum_to_the_totals_and_rotate_with_the_cell(model64, family):
    """``get_potential_energies`` / ``get_stresses``: they sum to the energy and the stress
    (1e-10), and rotating the cell and atoms leaves each energy and rotates each atom's stress
    tensor."""
    model = model64 if family == "mace" else tiny_allegro(num_layers=1).to(torch.float64)
    atoms = with_calculator(make_triclinic_cu(seed=4) * (2, 1, 1), EquiforceCalculator(model))
    energies, stresses = atoms.get_potential_energies(), atoms.get_stresses(voigt=False)
    assert energies.shape == (len(atoms),) and stresses.shape == (len(atoms), 3, 3)
    assert_close(energies.sum(), atoms.get_potential_energy(), TOL.fp64, "energies")
    assert_close(stresses.sum(axis=0), atoms.get_stress(voigt=False), TOL.fp64, "stresses")
    assert np.abs(stresses - stresses.mean(axis=0)).max() > 1e-4  # eV/Å^3: atoms differ
    rotation = _rotation(seed=7)
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation.T)
    rotated.positions = atoms.positions @ rotation.T
    rotated.calc = EquiforceCalculator(model)
    assert_close(rotated.get_potential_energies(), energies, TOL.fp64, "energies, rotated")
    want = np.einsum("ab,nbc,dc->nad", rotation, stresses, rotation)
    assert_close(rotated.get_stresses(voigt=False), want, TOL.fp64, "stresses, rotated")


def test_per_atom_stresses_need_a_3d_periodic_cell(model64):
    atoms = with_calculator(make_molecule("CH3CH2OH"), EquiforceCalculator(model64))
    assert_close(
        atoms.get_potential_energies().sum(), atoms.get_potential_energy(), TOL.fp64, "energies"
    )
    with pytest.raises(PropertyNotImplementedError, match="stresses needs a cell periodic in 3D"):
        atoms.get_stresses()


@pytest.mark.parametrize("family", ["mace", "allegro"])
@pytest.mark.parametrize("kind", ["periodic", "molecule"])
def test_hessian_is_the_derivative_of_the_forces(model64, family, kind):
    """``get_hessian`` (double backward): symmetric, equal to central differences of the
    forces (h = 1e-5 Å), and translation invariant (each row sums to zero over the atoms)."""
    model = model64 if family == "mace" else tiny_allegro(torch.float64)
    calculator = EquiforceCalculator(model)
    atoms = with_calculator(STRUCTURES[kind](), calculator)
    matrix = calculator.get_hessian(atoms)
    n = len(atoms)
    assert matrix.shape == (3 * n, 3 * n)
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-10)
    step, columns = 1e-5, []
    for k in range(3 * n):
        forces = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[k // 3, k % 3] += sign * step
            moved.calc = calculator
            forces.append(moved.get_forces().reshape(-1))
        columns.append(-(forces[0] - forces[1]) / (2 * step))
    assert_close(matrix, np.array(columns).T, TOL.finite_difference, "Hessian vs forces")
    np.testing.assert_allclose(matrix.reshape(3 * n, n, 3).sum(1), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="get_hessian needs a structure"):
        EquiforceCalculator(model).get_hessian()


def test_energies_and_forces_of_several_structures_in_one_call(model64):
    """``energies_and_forces``: a triclinic cell, a molecule and a cubic cell (different sizes
    and periodicities) in one batch give each structure's own energy and forces (1e-12)."""
    frames = [STRUCTURES[kind]() for kind in ("triclinic", "molecule", "periodic")]
    calculator = EquiforceCalculator(model64)
    energies, forces = calculator.energies_and_forces(frames)
    assert energies.shape == (3,) and [len(f) for f in forces] == [len(a) for a in frames]
    for atoms, energy, force in zip(frames, energies, forces, strict=True):
        alone = with_calculator(atoms, EquiforceCalculator(model64))
        assert abs(energy - alone.get_potential_energy()) < 1e-12
        np.testing.assert_allclose(force, alone.get_forces(), atol=1e-12)
