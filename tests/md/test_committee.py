"""CommitteeCalculator: the mean is the members' mean, the spread their disagreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.committee import (
    MANIFEST_NAME,
    CommitteeCalculator,
    committee_members,
    force_spread,
)
from equiforce.models import save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.testing.tolerances import TOL


@pytest.fixture(scope="module")
def members():
    """Three tiny float64 MACEs with different initial weights."""
    return [tiny_mace(torch.float64, seed=seed) for seed in (1, 2, 3)]


def test_committee_mean_equals_the_members_mean(members):
    """Energy, forces and stress of the committee equal the mean of each member's calculator."""
    atoms = make_fcc_cu(repeat=1, seed=4, rattle=0.1)
    committee = CommitteeCalculator(members)
    atoms.calc = committee
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    singles = []
    for model in members:
        single = atoms.copy()
        single.calc = EquiforceCalculator(model)
        singles.append((single.get_potential_energy(), single.get_forces(), single.get_stress()))
    np.testing.assert_allclose(energy, np.mean([s[0] for s in singles]), **vars(TOL.fp64))
    np.testing.assert_allclose(forces, np.mean([s[1] for s in singles], axis=0), **vars(TOL.fp64))
    np.testing.assert_allclose(stress, np.mean([s[2] for s in singles], axis=0), **vars(TOL.fp64))
    spread = committee.results["force_uncertainty"]
    member_forces = np.stack([s[1] for s in singles])
    expected = np.sqrt(((member_forces - member_forces.mean(0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(spread, expected, **vars(TOL.fp64))
    assert spread.shape == (len(atoms),) and spread.min() > 0
    assert committee.results["energy_uncertainty"] == pytest.approx(np.std([s[0] for s in singles]))


def test_members_share_one_batch_per_species_cutoff_and_device(members, monkeypatch):
    """Members with the same species, r_max and device evaluate one neighbour list and batch;
    a member with another r_max gets its own; every member's result and cache stay its own."""
    import equiforce.md.calculator as calculator_module

    wider = tiny_mace(torch.float64, seed=5, r_max=4.5)
    built = []
    atoms_batch = calculator_module.atoms_batch
    monkeypatch.setattr(
        calculator_module,
        "atoms_batch",
        lambda atoms, type_names, r_max, device: (
            built.append(r_max) or atoms_batch(atoms, type_names, r_max, device)
        ),
    )
    atoms = make_fcc_cu(repeat=1, seed=6, rattle=0.1)
    committee = CommitteeCalculator([*members, wider])
    atoms.calc = committee
    forces = atoms.get_forces()
    assert sorted(built) == [4.0, 4.5]
    singles = []
    for member, model in zip(committee.members, [*members, wider], strict=True):
        single = atoms.copy()
        single.calc = EquiforceCalculator(model)
        singles.append(single.get_forces())
        np.testing.assert_allclose(member.get_forces(atoms), singles[-1], **vars(TOL.fp64))
    np.testing.assert_allclose(forces, np.mean(singles, axis=0), **vars(TOL.fp64))


def test_identical_members_have_zero_spread(members):
    """A committee of one model three times has zero energy and force spread."""
    atoms = make_molecule("CH3CH2OH", seed=2)
    committee = CommitteeCalculator([members[0]] * 3)
    atoms.calc = committee
    atoms.get_forces()
    member_forces = committee.results["committee_forces"]
    assert member_forces.shape == (3, len(atoms), 3)
    np.testing.assert_array_equal(member_forces[0], member_forces[2])  # deterministic members
    # zero up to the rounding of the mean (3 x / 3 need not be x exactly)
    assert committee.results["energy_uncertainty"] == pytest.approx(0.0, abs=TOL.fp64.atol)
    spread = committee.results["force_uncertainty"]
    np.testing.assert_allclose(spread, np.zeros(len(atoms)), **vars(TOL.fp64))


def test_energy_only_request_skips_forces(members):
    """Asking for the energy spread alone computes no forces."""
    atoms = make_molecule("CH3CH2OH", seed=2)
    committee = CommitteeCalculator(members[:2])
    committee.calculate(atoms, ["energy_uncertainty"])
    assert "forces" not in committee.results and committee.results["energy_uncertainty"] > 0


def test_force_spread_of_two_members_is_half_their_distance():
    """Two members: each atom's spread is half the distance between the two force vectors."""
    forces = np.zeros((2, 2, 3))
    forces[1, 0] = [3.0, 4.0, 0.0]
    np.testing.assert_allclose(force_spread(forces), [2.5, 0.0], **vars(TOL.fp64))


def test_committee_folder_lists_its_members(tmp_path, members):
    """A committee folder resolves to its manifest's members; errors name the file."""
    for k, model in enumerate(members[:2]):
        save_model(model, tmp_path / f"member_{k}" / "model.pt")
    manifest = {"members": ["member_0/model.pt", "member_1/model.pt"]}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    expected = [tmp_path / "member_0/model.pt", tmp_path / "member_1/model.pt"]
    assert committee_members([tmp_path]) == expected
    assert len(CommitteeCalculator.from_paths([tmp_path])) == 2
    with pytest.raises(ValueError, match="without committee.json"):
        CommitteeCalculator.from_paths([tmp_path / "member_0"])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        committee_members([tmp_path / "missing.pt"])
