"""Relaxation: fmax reached on a rattled crystal with its cell and on molecules; batched
(TorchSim) equals one by one (ASE); ``equiforce relax`` writes energies and a summary."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from ase.io import read, write
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce.cli.relax import add_arguments, run
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.relax import format_relax_summary, relax_structure, relax_structures

FMAX = 0.01  # eV/Å


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the ``relax`` subcommand's options."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def rattled_cu(a: float = 3.68, repeat: int = 1, seed: int = 1):
    """An fcc Cu cell away from equilibrium: strained lattice, rattled atoms."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=seed)
    return atoms


def pressure_GPa(atoms) -> float:
    """Hydrostatic pressure of the structure's stress (no kinetic part), GPa."""
    return float(-atoms.get_stress()[:3].mean() / units.GPa)


def forces_fmax(atoms) -> float:
    """The largest force norm, eV/Å."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


@pytest.mark.parametrize(
    ("optimizer", "target_GPa"), [("fire", 0.0), ("bfgs", 2.0), ("lbfgs", 1.0)]
)
def test_cell_relaxation_reaches_fmax_and_target_pressure(emt_cu_model, optimizer, target_GPa):
    start = rattled_cu()
    result = relax_structure(
        start,
        EquiforceCalculator(emt_cu_model),
        fmax=FMAX,
        steps=300,
        optimizer=optimizer,
        cell=True,
        pressure_GPa=target_GPa,
    )
    assert result.converged and result.cell_relaxed and 0 < result.n_steps < 300
    assert result.fmax < FMAX and forces_fmax(result.atoms) < FMAX
    # cell forces (virial / n_atoms) below fmax bound |P - P_target| by fmax * n / V
    bound = FMAX * len(start) / result.atoms.get_volume() / units.GPa
    assert abs(pressure_GPa(result.atoms) - target_GPa) < bound
    assert result.atoms.get_volume() < start.get_volume()  # a = 3.68 Å is stretched


def torch_assert_equal(a, b) -> None:
    """Two tensors equal to the bit."""
    assert torch.equal(a, b)


class PushedModel:
    """A TorchSim model plus ``PushedAtom``'s constant force on the first atom of each system
    (and its energy ``-force . r``)."""

    def __init__(self, model, force) -> None:
        self.model, self.force = model, torch.as_tensor(force, dtype=model.dtype)

    def __getattr__(self, name: str):
        return getattr(self.model, name)  # device, dtype, type_names, ...

    def __call__(self, state, **kwargs):
        out = dict(self.model(state, **kwargs))
        first = torch.searchsorted(state.system_idx, torch.unique(state.system_idx))
        out["forces"] = out["forces"].index_add(0, first, self.force.expand(len(first), 3))
        out["energy"] = out["energy"] - state.positions[first] @ self.force
        return out


class PushedAtom(Calculator):
    """A constant force (eV/Å) on atom 0, from the energy ``-force . r_0``: a model whose
    forces break the crystal's symmetry a little."""

    implemented_properties = ("energy", "forces", "stress")

    def __init__(self, force) -> None:
        super().__init__()
        self.force = np.asarray(force, dtype=np.float64)

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        forces = np.zeros((len(self.atoms), 3))
        forces[0] = self.force
        energy = -float(self.force @ self.atoms.positions[0])
        self.results = {"energy": energy, "forces": forces, "stress": np.zeros(6)}


def test_fix_symmetry_keeps_the_space_group_exactly(emt_cu_model, tmp_path):
    """A cubic cell distorted below the tolerance (atoms 2e-4 Å, a shear of 2e-4), relaxed
    with its cell under a model plus a small push on one atom: with ``--fix-symmetry`` it is
    symmetrised first and the push averages out, so the result is Fm-3m to spglib at 1e-6 Å
    with a cubic cell; without, it is monoclinic or lower. The space group is in the output
    and its summary, also after a resume; the input's own constraints are kept."""
    pytest.importorskip("spglib")
    from ase.calculators.mixing import SumCalculator
    from ase.constraints import FixAtoms
    from ase.spacegroup.symmetrize import check_symmetry

    start = bulk("Cu", "fcc", a=3.7, cubic=True)
    start.rattle(2e-4, seed=3)
    shear = np.eye(3) + np.array([[0, 2e-4, 0], [0, 0, 0], [0, 0, -2e-4]])
    start.set_cell(start.cell.array @ shear, scale_atoms=True)
    options = dict(fmax=FMAX, steps=300, cell=True)
    calculator = EquiforceCalculator(emt_cu_model)
    pushed = SumCalculator([calculator, PushedAtom([3e-3, 2e-3, 0.0])])
    plain = relax_structure(start, pushed, **options)
    kept = relax_structure(start, pushed, symmetry_tolerance=0.01, **options)
    assert plain.converged and kept.converged and kept.spacegroup == "Fm-3m (225)"
    assert check_symmetry(plain.atoms, 1e-6).number < 16 and plain.spacegroup is None
    assert check_symmetry(kept.atoms, 1e-6).number == 225 and kept.atoms.constraints == []
    lengths, angles = np.split(kept.atoms.cell.cellpar(), 2)
    np.testing.assert_allclose(lengths, lengths[0], rtol=1e-12)
    np.testing.assert_allclose(angles, 90.0, rtol=1e-12)

    fixed = start.copy()
    fixed.set_constraint(FixAtoms([0]))  # FixSymmetry comes on top and leaves with the run
    result = relax_structure(fixed, calculator, fmax=FMAX, steps=2, symmetry_tolerance=0.01)
    assert [type(c).__name__ for c in result.atoms.constraints] == ["FixAtoms"]
    with pytest.raises(ValueError, match="symmetry_tolerance must be positive, got 0"):
        relax_structure(start, calculator, symmetry_tolerance=0.0)
    with pytest.raises(ValueError, match="CH4 has no 3D cell: .* put the molecule in a box"):
        relax_structure(molecule("CH4"), calculator, symmetry_tolerance=0.01)

    write(tmp_path / "in.xyz", [start, bulk("Cu", "bcc", a=2.9)])
    out = tmp_path / "out.xyz"
    argv = [emt_cu_model, str(tmp_path / "in.xyz"), str(out), "--cell", "--fix-symmetry"]
    assert run(parse(argv)) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [row["spacegroup"] for row in summary] == ["Fm-3m (225)", "Im-3m (229)"]
    assert read(out, index="0").info["relax_spacegroup"] == "Fm-3m (225)"
    assert run(parse([*argv, "--resume"])) == 0  # nothing left: the results read back
    assert json.loads(out.with_suffix(".json").read_text()) == summary


def test_molecules_relax_to_fmax(emt_cu_model):
    methane = molecule("CH4")
    methane.rattle(0.1, seed=2)
    emt = relax_structure(methane, EMT(), fmax=FMAX, steps=300, optimizer="bfgs", cell=True)
    assert emt.converged and not emt.cell_relaxed and forces_fmax(emt.atoms) < FMAX
    assert "stress" not in emt.atoms.calc.results
    cluster = Octahedron("Cu", 3)
    cluster.rattle(0.05, seed=3)
    model = relax_structure(cluster, EquiforceCalculator(emt_cu_model), fmax=FMAX, steps=300)
    assert model.converged and forces_fmax(model.atoms) < FMAX
    assert np.allclose(model.atoms.cell.array, 0.0)


def test_unconverged_structures_are_reported(emt_cu_model):
    results = relax_structures([rattled_cu()], EquiforceCalculator(emt_cu_model), steps=2)
    assert not results[0].converged and results[0].n_steps == 2 and results[0].fmax > 0.05
    assert "0 of 1 converged" in format_relax_summary(results)


def test_symmetrized_model_averages_as_fix_symmetry(emt_cu_model):
    """``SymmetrizedModel``'s forces and stress equal ASE's ``FixSymmetry`` (``adjust_forces``,
    ``adjust_stress``) applied to the model's own, to 1e-12, for Cu at general positions of
    a tetragonal (4-fold axis) and of a rotated hexagonal (3-fold axis) group in one state;
    with a system dropped (``keep``), the other's still do; an identity group leaves them as
    they are."""
    pytest.importorskip("torch_sim")
    pytest.importorskip("spglib")
    from ase.constraints import FixSymmetry
    from ase.spacegroup import crystal
    from scipy.spatial.transform import Rotation

    from equiforce.md.torchsim import EquiforceModel, SymmetrizedModel, atoms_to_state

    tetragonal = crystal(["Cu"], [(0.13, 0.27, 0.31)], spacegroup=75, cellpar=[5.2, 5.2, 3.9])
    hexagonal = crystal(
        ["Cu"], [(0.30, 0.05, 0.33)], spacegroup=143, cellpar=[5.0, 5.0, 4.0, 90, 90, 120]
    )
    turn = Rotation.from_rotvec([0.2, 0.5, -0.3]).as_matrix()
    hexagonal.set_cell(hexagonal.cell.array @ turn.T, scale_atoms=True)
    fixes = [FixSymmetry(atoms, symprec=1e-3) for atoms in (tetragonal, hexagonal)]
    operations = [(np.asarray(f.rotations), np.asarray(f.symm_map)) for f in fixes]
    assert [len(f.rotations) for f in fixes] == [8, 6]
    model = EquiforceModel(emt_cu_model, compute_stress=True)
    frames = [tetragonal.copy(), hexagonal.copy()]
    for frame, seed in zip(frames, (1, 2), strict=True):
        frame.rattle(0.05, seed=seed)  # forces and stress without the symmetry
    symmetric = SymmetrizedModel(model, operations)
    for kept in ([0, 1], [1]):
        state = atoms_to_state([frames[k] for k in kept], model.device, model.dtype)
        raw, averaged = model(state), symmetric(state)
        offsets = np.cumsum([0] + [len(frames[k]) for k in kept])
        for local, k in enumerate(kept):
            rows = slice(offsets[local], offsets[local + 1])
            forces = raw["forces"][rows].detach().numpy().copy()
            fixes[k].adjust_forces(frames[k], forces)
            assert np.abs(forces).max() > 0.05  # general positions: symmetric forces too
            np.testing.assert_allclose(
                averaged["forces"][rows].detach().numpy(), forces, atol=1e-12
            )
            stress = full_3x3_to_voigt_6_stress(raw["stress"][local].detach().numpy())
            fixes[k].adjust_stress(frames[k], stress)
            mine = full_3x3_to_voigt_6_stress(averaged["stress"][local].detach().numpy())
            np.testing.assert_allclose(mine, stress, atol=1e-12)
        assert (averaged["forces"] - raw["forces"]).abs().max() > 1e-3  # not a no-op
        symmetric.keep([1]) if len(kept) == 2 else None
    identity = (np.eye(3, dtype=int)[None], np.arange(len(frames[0]))[None])
    state = atoms_to_state(frames[:1], model.device, model.dtype)
    alone = SymmetrizedModel(model, [identity])(state)
    torch_assert_equal(alone["forces"], model(state)["forces"])


def test_batched_relaxation_keeps_the_space_group(emt_cu_model, tmp_path):
    """``relax_batched(symmetry_tolerance=...)`` / ``relax --batched --fix-symmetry``: the
    cubic cell distorted below the tolerance and pushed on one atom (as in the test above)
    relaxes with its cell to Fm-3m at 1e-6 Å with a cubic cell, as ``relax_structure`` with
    ``FixSymmetry`` does (energy within 1e-4 eV, cell within 1e-3 Å), after a relaxed bcc cell
    left the batch; without the symmetry it is monoclinic or lower. FixAtoms with the
    symmetry, and a molecule, are refused by index."""
    pytest.importorskip("torch_sim")
    pytest.importorskip("spglib")
    from ase.calculators.mixing import SumCalculator
    from ase.constraints import FixAtoms
    from ase.spacegroup.symmetrize import check_symmetry

    from equiforce.md.relax import relax_batched
    from equiforce.md.torchsim import EquiforceModel

    push = np.array([3e-3, 2e-3, 0.0])
    start = bulk("Cu", "fcc", a=3.7, cubic=True)
    start.rattle(2e-4, seed=3)
    shear = np.eye(3) + np.array([[0, 2e-4, 0], [0, 0, 0], [0, 0, -2e-4]])
    start.set_cell(start.cell.array @ shear, scale_atoms=True)
    options = dict(fmax=FMAX, steps=300, cell=True)
    calculator = SumCalculator([EquiforceCalculator(emt_cu_model), PushedAtom(push)])
    serial = relax_structure(start, calculator, symmetry_tolerance=0.01, **options)
    relaxed_bcc = relax_structure(bulk("Cu", "bcc", a=2.87), calculator, **options).atoms
    pushed = PushedModel(EquiforceModel(emt_cu_model, compute_stress=True), push)
    frames = [relaxed_bcc, start]
    kept = relax_batched(frames, pushed, symmetry_tolerance=0.01, **options)
    plain = relax_batched(frames, pushed, **options)
    assert [r.spacegroup for r in kept] == ["Im-3m (229)", "Fm-3m (225)"]
    assert kept[0].n_steps < kept[1].n_steps and all(r.converged for r in kept + plain)
    assert check_symmetry(kept[1].atoms, 1e-6).number == 225
    assert check_symmetry(plain[1].atoms, 1e-6).number < 16 and plain[1].spacegroup is None
    lengths, angles = np.split(kept[1].atoms.cell.cellpar(), 2)
    np.testing.assert_allclose(lengths, lengths[0], rtol=1e-10)
    np.testing.assert_allclose(angles, 90.0, rtol=1e-10)
    assert abs(kept[1].energy - serial.energy) < 1e-4
    np.testing.assert_allclose(kept[1].atoms.cell.array, serial.atoms.cell.array, atol=1e-3)

    fixed = start.copy()
    fixed.set_constraint(FixAtoms([0]))
    with pytest.raises(ValueError, match=r"structure 1 \(Cu4\) has FixAtoms and its symmetry"):
        relax_batched([start, fixed], pushed, symmetry_tolerance=0.01)
    with pytest.raises(ValueError, match="structure 1: Cu6 has no 3D cell"):
        relax_batched([start, Octahedron("Cu", 2)], pushed, symmetry_tolerance=0.01)
    write(tmp_path / "in.xyz", [start, bulk("Cu", "bcc", a=2.9)])
    out = tmp_path / "out.xyz"
    argv = [emt_cu_model, str(tmp_path / "in.xyz"), str(out), "--cell", "--fix-symmetry"]
    assert run(parse([*argv, "--batched"])) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [row["spacegroup"] for row in summary] == ["Fm-3m (225)", "Im-3m (229)"]
    assert read(out, index="0").info["relax_spacegroup"] == "Fm-3m (225)"


def test_batched_relaxation_equals_one_by_one(emt_cu_model):
    pytest.importorskip("torch_sim")
    from equiforce.md.relax import relax_batched
    from equiforce.md.torchsim import EquiforceModel

    cluster = Octahedron("Cu", 2)
    cluster.rattle(0.05, seed=3)
    frames = [rattled_cu(3.70, seed=1), cluster]
    options = dict(fmax=FMAX, steps=300, cell=True, pressure_GPa=0.5)
    serial = relax_structures(frames, EquiforceCalculator(emt_cu_model), **options)
    batched = relax_batched(frames, EquiforceModel(emt_cu_model), **options)
    for one, many in zip(serial, batched, strict=True):
        assert one.converged and many.converged
        assert one.cell_relaxed == many.cell_relaxed
        assert abs(one.n_steps - many.n_steps) <= 1
        assert abs(one.energy - many.energy) < 1e-4
        np.testing.assert_allclose(many.atoms.positions, one.atoms.positions, atol=1e-3)
        np.testing.assert_allclose(many.atoms.cell.array, one.atoms.cell.array, atol=1e-3)
    # a relaxed cell leaves the batch at step 0; the cluster runs out of steps
    mixed = [serial[0].atoms, frames[1]]
    short = relax_batched(mixed, EquiforceModel(emt_cu_model), **{**options, "steps": 3})
    assert [(r.converged, r.n_steps) for r in short] == [(True, 0), (False, 3)]
    np.testing.assert_allclose(short[0].atoms.positions, mixed[0].positions, atol=1e-12)
    assert short[1].fmax >= FMAX


@pytest.mark.parametrize("mode", ["constant-volume", "hydrostatic"])
def test_cell_modes_one_by_one_and_batched(emt_cu_model, tmp_path, mode):
    """``--cell-mode``: a stretched and sheared Cu cell relaxes at constant volume (its volume
    kept to 1e-10 relative, its shape changing) or at constant shape (its cell a multiple of
    the start's to 1e-10, its volume changing), ASE's filter one by one and TorchSim's batched
    alike (energies within 1e-4 eV, cells within 1e-3 Å); without ``--cell`` refused."""
    pytest.importorskip("torch_sim")
    from equiforce.md.relax import relax_batched
    from equiforce.md.torchsim import EquiforceModel

    start = rattled_cu(3.68, seed=4)
    start.set_cell(start.cell.array @ (np.eye(3) + [[0, 0.03, 0], [0, 0, 0], [0, 0, 0.02]]))
    options = dict(fmax=FMAX, steps=400, cell=True, cell_mode=mode)
    one = relax_structure(start, EquiforceCalculator(emt_cu_model), **options)
    many = relax_batched([start], EquiforceModel(emt_cu_model), **options)[0]
    for result in (one, many):
        assert result.converged
        volume = result.atoms.get_volume() / start.get_volume()
        if mode == "constant-volume":
            assert abs(volume - 1) < 1e-10
            assert np.abs(result.atoms.cell.array - start.cell.array).max() > 1e-3
        else:
            ratio = result.atoms.cell.array[0, 0] / start.cell.array[0, 0]
            np.testing.assert_allclose(result.atoms.cell.array, ratio * start.cell.array, atol=1e-9)
            assert abs(volume - 1) > 1e-3
    assert abs(one.energy - many.energy) < 1e-4
    np.testing.assert_allclose(many.atoms.cell.array, one.atoms.cell.array, atol=1e-3)
    write(tmp_path / "in.xyz", start)
    with pytest.raises(ValueError, match=f"--cell-mode {mode} needs --cell"):
        run(
            parse(
                [
                    emt_cu_model,
                    str(tmp_path / "in.xyz"),
                    str(tmp_path / "o.xyz"),
                    "--cell-mode",
                    mode,
                ]
            )
        )


def test_batched_relaxation_keeps_fixed_atoms_fixed(emt_cu_model):
    """FixAtoms in a batched relaxation: the fixed atoms stay where they are (exactly) and
    the rest relaxes as ASE's FIRE with the constraint, also after a converged structure has
    left the batch; a slab with its bottom layer fixed shares the cluster's batch (periodic
    along x and y only); in a cell relaxation the fixed atoms keep their fractional
    coordinates (following the cell) as under ASE's cell filter, the relaxation as ASE's;
    other constraints are refused."""
    pytest.importorskip("torch_sim")
    from ase.constraints import FixAtoms, FixBondLength

    from equiforce.md.relax import relax_batched
    from equiforce.md.torchsim import EquiforceModel

    cluster = Octahedron("Cu", 2)
    cluster.rattle(0.05, seed=3)
    cluster.set_constraint(FixAtoms([0, 3]))
    crystal = rattled_cu(3.61, repeat=2, seed=2)
    crystal.set_constraint(FixAtoms(mask=crystal.positions[:, 2] < 1.0))
    slab = fcc111("Cu", (2, 2, 3), a=3.61, vacuum=5.0)
    slab.rattle(0.05, seed=4)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))
    frames = [rattled_cu(3.61, seed=1), crystal, cluster, slab]  # the first converges first
    options = dict(fmax=FMAX, steps=300)
    serial = relax_structures(frames, EquiforceCalculator(emt_cu_model), **options)
    batched = relax_batched(frames, EquiforceModel(emt_cu_model), **options)
    for start, one, many in zip(frames, serial, batched, strict=True):
        assert one.converged and many.converged and abs(one.n_steps - many.n_steps) <= 1
        fixed = start.constraints[0].get_indices() if start.constraints else []
        np.testing.assert_array_equal(many.atoms.positions[fixed], start.positions[fixed])
        np.testing.assert_array_equal(many.atoms.get_forces()[fixed], 0.0)
        assert abs(one.energy - many.energy) < 1e-4  # a step apart at most: 2e-3 Å
        np.testing.assert_allclose(many.atoms.positions, one.atoms.positions, atol=3e-3)
    assert batched[0].n_steps < batched[1].n_steps
    pair = cluster.copy()
    pair.set_constraint(FixBondLength(0, 1))
    with pytest.raises(ValueError, match=r"structure 1 \(Cu6\) has the constraint FixBondLengths:"):
        relax_batched([frames[0], pair], EquiforceModel(emt_cu_model))
    # with its cell: the fixed atoms keep their fractional coordinates, as under ASE's filter
    options["cell"] = True
    one = relax_structure(crystal, EquiforceCalculator(emt_cu_model), **options)
    many = relax_batched([crystal], EquiforceModel(emt_cu_model), **options)[0]
    fixed = crystal.constraints[0].get_indices()
    start = crystal.get_scaled_positions()[fixed]
    for result in (one, many):
        assert result.converged and result.cell_relaxed
        np.testing.assert_allclose(result.atoms.get_scaled_positions()[fixed], start, atol=1e-12)
        assert np.abs(result.atoms.positions[fixed] - crystal.positions[fixed]).max() > 5e-3
    assert abs(one.energy - many.energy) < 1e-4 and abs(one.n_steps - many.n_steps) <= 1
    np.testing.assert_allclose(many.atoms.positions, one.atoms.positions, atol=1e-3)
    with pytest.raises(ValueError, match=r"structure 1 \(Au\): element Au is unknown"):
        relax_batched([frames[0], Atoms("Au")], EquiforceModel(emt_cu_model))


def test_cli_relax_writes_structures_and_summary(emt_cu_model, tmp_path, capsys):
    frames = [rattled_cu(seed=1), Octahedron("Cu", 2)]
    write(tmp_path / "in.xyz", frames)
    out = tmp_path / "out.xyz"
    status = run(
        parse([emt_cu_model, str(tmp_path / "in.xyz"), str(out), "--cell", "--fmax", "0.02"])
    )
    assert status == 0
    relaxed = read(out, index=":")
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(relaxed) == len(summary) == 2
    for atoms, row in zip(relaxed, summary, strict=True):
        assert atoms.info["relax_converged"] and row["converged"] and row["steps"] > 0
        assert atoms.get_potential_energy() == pytest.approx(row["energy_eV"])
        assert forces_fmax(atoms) < 0.02
    assert relaxed[0].get_stress().shape == (6,) and "stress" not in relaxed[1].calc.results
    assert "2 of 2 converged" in capsys.readouterr().out


def test_cli_relax_rejects_bad_options(emt_cu_model, tmp_path):
    write(tmp_path / "in.xyz", rattled_cu())
    for extra, message in [
        (["--pressure", "1"], "needs --cell"),
        (["--batched", "--optimizer", "bfgs"], "drop --optimizer bfgs"),
    ]:
        args = parse([emt_cu_model, str(tmp_path / "in.xyz"), str(tmp_path / "o.xyz"), *extra])
        with pytest.raises(ValueError, match=message):
            run(args)
    args = parse([emt_cu_model, str(tmp_path / "in.xyz"), str(tmp_path / "o.json")])
    with pytest.raises(ValueError, match="xyz"):
        run(args)


def test_equiforce_relax_batched_through_main(emt_cu_model, tmp_path):
    pytest.importorskip("torch_sim")
    from equiforce.cli.main import main

    write(tmp_path / "in.xyz", [rattled_cu(seed=4), Octahedron("Cu", 2)])
    out = tmp_path / "out.extxyz"
    argv = ["relax", emt_cu_model, str(tmp_path / "in.xyz"), str(out), "--batched", "--cell"]
    assert main([*argv, "--fmax", "0.02"]) == 0
    relaxed = read(out, index=":")
    assert [atoms.info["relax_converged"] for atoms in relaxed] == [True, True]
    assert max(forces_fmax(atoms) for atoms in relaxed) < 0.02
    assert main([*argv[:-2], "--pressure", "1"]) == 2  # an error: --pressure needs --cell


def test_cli_relax_resumes_a_stopped_run_without_redoing_its_structures(
    emt_cu_model, tmp_path, monkeypatch
):
    """One by one, each structure is appended as it finishes: a run stopped in its third
    structure (and a frame cut short by the kill) resumes with the other two only, and the
    output equals an uninterrupted run's, byte for byte."""
    from equiforce.md import relax as relax_module

    frames = [rattled_cu(seed=s) for s in (1, 2)] + [Octahedron("Cu", 2), rattled_cu(seed=3)]
    write(tmp_path / "in.xyz", frames)
    argv = [emt_cu_model, str(tmp_path / "in.xyz")]
    assert run(parse([*argv, str(tmp_path / "whole.xyz")])) == 0
    relax_one, calls = relax_module.relax_structure, []

    def killed_in_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return relax_one(*args, **kwargs)

    out = tmp_path / "out.xyz"
    monkeypatch.setattr(relax_module, "relax_structure", killed_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        run(parse([*argv, str(out)]))
    assert len(read(out, index=":")) == 2
    with open(out, "a") as handle:
        handle.write('4\nLattice="3.6 0 0 0 3.6 0 0 0 3.6"\nCu 0 0 0\n')  # cut by the kill
    counted = []
    monkeypatch.setattr(
        relax_module, "relax_structure", lambda *a, **k: counted.append(1) or relax_one(*a, **k)
    )
    assert run(parse([*argv, str(out), "--resume"])) == 0
    assert len(counted) == 2  # the two unfinished structures only
    assert out.read_bytes() == (tmp_path / "whole.xyz").read_bytes()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [row["formula"] for row in summary] == [a.get_chemical_formula() for a in frames]

    write(tmp_path / "other.xyz", [Octahedron("Cu", 2)] + frames[1:])
    with pytest.raises(ValueError, match=r"out.xyz, frame 0: Cu4 is not the input's structure 0"):
        run(parse([emt_cu_model, str(tmp_path / "other.xyz"), str(out), "--resume"]))


def test_cli_relax_batched_resumes_after_its_finished_batches(emt_cu_model, tmp_path, monkeypatch):
    """``--batched`` appends each batch's structures (in input order) as the batch finishes:
    stopped in its second batch, it resumes with the unfinished batches only, and the output
    equals an uninterrupted batched run's, byte for byte."""
    pytest.importorskip("torch_sim")
    from equiforce.md import relax as relax_module

    frames = [rattled_cu(seed=s) for s in (1, 2, 3, 5)]  # 4 atoms each: batches of 2
    write(tmp_path / "in.xyz", frames)
    argv = [emt_cu_model, str(tmp_path / "in.xyz"), "--batched", "--max-batch-atoms", "8"]
    assert run(parse([*argv, str(tmp_path / "whole.xyz")])) == 0
    relax_group, batches = relax_module._relax_group, []

    def killed_in_the_second(frames, *args, **kwargs):
        batches.append(len(frames))
        if len(batches) == 2:
            raise KeyboardInterrupt
        return relax_group(frames, *args, **kwargs)

    out = tmp_path / "out.xyz"
    monkeypatch.setattr(relax_module, "_relax_group", killed_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        run(parse([*argv, str(out)]))
    assert len(read(out, index=":")) == 2
    batches.clear()
    monkeypatch.setattr(
        relax_module,
        "_relax_group",
        lambda f, *a, **k: batches.append(len(f)) or relax_group(f, *a, **k),
    )
    assert run(parse([*argv, str(out), "--resume"])) == 0
    assert batches == [2]  # the unfinished batch only
    assert out.read_bytes() == (tmp_path / "whole.xyz").read_bytes()
