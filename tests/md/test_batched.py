"""Batched MD through TorchSim (``run_batched_md``, ``equiforce md --batched``): NVE equals
``run_md`` structure by structure, Langevin holds the temperature, a killed run resumed equals
the run never stopped bit for bit, and what it cannot run is refused by name."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("torch_sim")

from ase import Atoms  # noqa: E402
from ase.build import bulk, fcc111  # noqa: E402
from ase.constraints import FixAtoms, FixBondLength  # noqa: E402
from ase.io import read, write  # noqa: E402

from equiforce.cli.main import main  # noqa: E402
from equiforce.md import CommitteeCalculator, EquiforceCalculator, run_md  # noqa: E402
from equiforce.md.batched import run_batched_md  # noqa: E402
from equiforce.md.dynamics import NPTSettings  # noqa: E402
from equiforce.md.torchsim import (  # noqa: E402
    CommitteeModel,
    EquiforceModel,
    atoms_to_state,
    state_groups,
)
from equiforce.md.uncertainty import UncertaintyWatch  # noqa: E402
from equiforce.testing.models import tiny_mace  # noqa: E402
from equiforce.testing.structures import (  # noqa: E402
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)

RUN = {"temperature_K": 400.0, "timestep_fs": 0.5, "log_interval": 5, "seed": 3}


def structures():
    """Two molecules and two periodic cells, interleaved (two TorchSim states)."""
    return [
        make_molecule("H2O", seed=1),
        make_fcc_cu(repeat=2, seed=1),
        make_molecule("CH4", seed=2),
        make_triclinic_cu(seed=4),
    ]


@pytest.mark.parametrize("max_batch_atoms", [None, 10])
def test_nve_equals_run_md_structure_by_structure(model64, tmp_path, max_batch_atoms):
    """Each structure at its own temperature (its start velocities) equals its run alone; a
    slab shares the molecules' state (periodic along x and y only)."""
    frames = [*structures(), make_slab(seed=3)]
    temperatures = [300.0, 400.0, 500.0, 600.0, 700.0]
    paths = [tmp_path / f"batched_{k}.xyz" for k in range(len(frames))]
    batched = run_batched_md(
        frames,
        model64,
        ensemble="nve",
        n_steps=20,
        trajectory_paths=paths,
        max_batch_atoms=max_batch_atoms,  # 10: five states, one structure each
        **{**RUN, "temperature_K": temperatures},
    )
    for k, atoms in enumerate(frames):
        alone = run_md(
            atoms,
            EquiforceCalculator(model64),
            ensemble="nve",
            n_steps=20,
            **{**RUN, "seed": 3 + k, "temperature_K": temperatures[k]},
        )
        mine = batched[k]
        assert mine.n_steps == 20 and mine.energy_drift is not None
        assert mine.temperature_target_K == temperatures[k]
        for name in ("time_fs", "potential_energy", "kinetic_energy", "temperature_K"):
            np.testing.assert_allclose(
                getattr(mine, name), getattr(alone, name), rtol=0, atol=1e-9, err_msg=name
            )
        final, reference = mine.final_atoms, alone.final_atoms  # unwrapped, as ASE's
        np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-9)
        np.testing.assert_allclose(final.get_momenta(), reference.get_momenta(), atol=1e-9)
        assert mine.bonds.n_bonds == alone.bonds.n_bonds
        assert mine.bonds.max_deviation == pytest.approx(alone.bonds.max_deviation, abs=1e-9)
        written = read(paths[k], ":")
        assert len(written) == 5 and len(written[0]) == len(atoms)
        assert written[-1].get_potential_energy() == pytest.approx(mine.potential_energy[-1])


def test_langevin_holds_the_temperature(emt_cu_model):
    """Eight 32-atom Cu cells, a temperature each (four at 300 K, four at 600 K,
    alternating): over the second half each four hold their own target (a 10x weaker
    friction, a unit slip, gives ~284 K at 300 K; the systems' spread ~2.5 K)."""
    frames = []
    for seed in range(8):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.rattle(0.02, seed=seed)
        frames.append(atoms)
    settings = dict(temperature_K=300.0, timestep_fs=2.0, friction=0.05, log_interval=5)
    ladder = {**settings, "temperature_K": [300.0, 600.0] * 4}
    results = run_batched_md(frames, emt_cu_model, n_steps=300, **ladder)
    temperatures = np.array([result.temperature_K for result in results])  # (8, 61)
    assert abs(temperatures[0::2, 30:].mean() - 300.0) < 10.0
    assert abs(temperatures[1::2, 30:].mean() - 600.0) < 20.0
    with pytest.raises(ValueError, match="3 temperatures for 8 structures"):
        run_batched_md(frames, emt_cu_model, n_steps=5, **{**settings, "temperature_K": [3.0] * 3})
    again = run_batched_md(frames[:2], emt_cu_model, n_steps=10, **settings)
    assert np.array_equal(
        again[0].temperature_K,
        run_batched_md(frames[:2], emt_cu_model, n_steps=10, **settings)[0].temperature_K,
    )  # seeded: reproducible


def test_nose_hoover_holds_the_temperature_of_the_free_atoms(emt_cu_model):
    """Four Cu(111) slabs with their bottom layer fixed and four 32-atom cells, at 300 and
    600 K, Nosé–Hoover chains of 50 fs: over the second half each kind holds its target
    within 6 % (a chain driving all 3N degrees of freedom, the fixed atoms' included, as
    ASE's ``NoseHooverChainNVT`` does, heats the slabs' free atoms to 4/3 of it)."""
    frames = []
    for seed in range(4):
        slab = fcc111("Cu", (3, 3, 4), a=3.61, vacuum=6.0)
        slab.rattle(0.02, seed=seed)
        bottom = slab.positions[:, 2] < slab.positions[:, 2].min() + 0.5
        slab.set_constraint(FixAtoms(mask=bottom))
        cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        cell.rattle(0.02, seed=seed)
        frames += [slab, cell]
    settings = dict(ensemble="nvt", thermostat="nose-hoover", thermostat_time_fs=50.0)
    targets = np.array([300.0, 300.0, 600.0, 600.0] * 2)
    settings.update(timestep_fs=2.0, log_interval=5, temperature_K=targets.tolist())
    results = run_batched_md(frames, emt_cu_model, n_steps=300, **settings)
    temperatures = np.array([result.temperature_K[30:].mean() for result in results])
    for kind in (slice(0, None, 2), slice(1, None, 2)):  # slabs, cells
        for target in (300.0, 600.0):
            mine = temperatures[kind][targets[kind] == target]
            assert abs(mine.mean() / target - 1) < 0.06, (kind, target, mine)


def _killed_after(model: EquiforceModel, calls: int) -> EquiforceModel:
    """``model`` raising ``KeyboardInterrupt`` (a kill) in its ``calls``+1-th call."""
    forward, left = model.forward, [calls]

    def killing_forward(*args, **kwargs):
        if left[0] == 0:
            raise KeyboardInterrupt
        left[0] -= 1
        return forward(*args, **kwargs)

    model.forward = killing_forward
    return model


def test_a_killed_run_resumed_equals_the_run_never_stopped(model64, tmp_path):
    frames = structures()
    settings = dict(RUN, ensemble="nvt", friction=0.02, restart_every=25, max_batch_atoms=35)

    def paths(name):
        return [tmp_path / f"{name}_{k}{'.xyz' if k % 2 else '.traj'}" for k in range(4)]

    whole = run_batched_md(
        frames,
        model64,
        n_steps=30,
        trajectory_paths=paths("whole"),
        restart_path=tmp_path / "whole.npz",
        **settings,
    )
    restart = tmp_path / "killed.npz"
    # three states (the molecules; the 32-atom cell; the 4-atom cell): three calls a step
    model = _killed_after(EquiforceModel(model64, compute_stress=False), calls=3 + 3 * 27)
    # killed in step 28: restart file of step 25, after a structure's largest bond deviation
    # (so the bond monitors' restore is checked)
    with pytest.raises(KeyboardInterrupt):
        run_batched_md(
            frames,
            model,
            n_steps=30,
            trajectory_paths=paths("killed"),
            restart_path=restart,
            **settings,
        )
    assert len(read(paths("killed")[1], ":")) == 6  # steps 0-25: frame 25 is written again
    resumed = run_batched_md(
        frames,
        model64,
        n_steps=30,
        trajectory_paths=paths("killed"),
        restart_path=restart,
        resume=True,
        **settings,
    )
    for a, b in zip(whole, resumed, strict=True):
        for name in ("time_fs", "potential_energy", "kinetic_energy", "temperature_K"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert np.array_equal(a.final_atoms.positions, b.final_atoms.positions)
        assert np.array_equal(a.final_atoms.get_momenta(), b.final_atoms.get_momenta())
        assert a.bonds == b.bonds
    for a, b in zip(paths("whole"), paths("killed"), strict=True):
        if a.suffix == ".xyz":
            assert a.read_bytes() == b.read_bytes()
        else:
            assert all(
                np.array_equal(x.positions, y.positions)
                and np.array_equal(x.get_momenta(), y.get_momenta())
                for x, y in zip(read(a, ":"), read(b, ":"), strict=True)
            )
    with pytest.raises(ValueError, match="temperature_K = 400.0; this call gives 300"):
        run_batched_md(
            frames,
            model64,
            n_steps=40,
            restart_path=restart,
            resume=True,
            **{**settings, "temperature_K": 300.0},
        )


def test_fixed_atoms_stay_and_the_others_move_as_in_run_md(model64, tmp_path):
    """FixAtoms (a slab's bottom layer, one atom of a cell): NVE equals ``run_md`` alone
    (ASE's velocity Verlet with the constraint; the temperature counts the free atoms'
    degrees of freedom) to 1e-9; in Langevin the fixed atoms stay put with zero momenta, the
    energies are those of the frames as written (the model saw the fixed atoms where they
    are held, not where the step's noise took them), and a run killed in step 8 and resumed
    equals the run never stopped."""
    slab = make_slab(seed=3)
    slab.set_constraint(FixAtoms(mask=slab.positions[:, 2] < slab.positions[:, 2].min() + 1.0))
    cell = make_fcc_cu(repeat=1, seed=2)
    cell.set_constraint(FixAtoms([1]))
    frames = [make_molecule("CH4", seed=2), slab, cell]
    fixed = [[], slab.constraints[0].get_indices(), [1]]
    nve = dict(RUN, ensemble="nve", n_steps=20)
    batched = run_batched_md(frames, model64, **nve)
    for k, atoms in enumerate(frames):
        alone = run_md(atoms, EquiforceCalculator(model64), **{**nve, "seed": 3 + k})
        for name in ("temperature_K", "potential_energy"):
            np.testing.assert_allclose(
                getattr(batched[k], name), getattr(alone, name), rtol=0, atol=1e-9, err_msg=name
            )
        final, reference = batched[k].final_atoms, alone.final_atoms
        np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-9)
    nvt = dict(RUN, ensemble="nvt", n_steps=20, restart_every=5)
    whole = run_batched_md(frames, model64, restart_path=tmp_path / "whole.npz", **nvt)
    for k, atoms in enumerate(frames):
        final = whole[k].final_atoms
        assert np.array_equal(final.positions[fixed[k]], atoms.positions[fixed[k]])
        assert not final.get_momenta()[fixed[k]].any()
        moved = np.delete(final.positions - atoms.positions, fixed[k], axis=0)
        assert np.linalg.norm(moved, axis=1).min() > 0
        energy = EquiforceCalculator(model64).get_potential_energy(final.copy())
        assert abs(energy - whole[k].potential_energy[-1]) < 1e-9
    model = _killed_after(EquiforceModel(model64), calls=2 + 2 * 7)  # two states
    with pytest.raises(KeyboardInterrupt):
        run_batched_md(frames, model, restart_path=tmp_path / "killed.npz", **nvt)
    resumed = run_batched_md(
        frames, model64, restart_path=tmp_path / "killed.npz", resume=True, **nvt
    )
    for a, b in zip(whole, resumed, strict=True):
        assert np.array_equal(a.temperature_K, b.temperature_K)
        assert np.array_equal(a.final_atoms.positions, b.final_atoms.positions)


@pytest.mark.parametrize("final_K", [None, 150.0])
@pytest.mark.parametrize("thermostat", ["nose-hoover", "bussi"])
def test_nvt_thermostat_equals_run_md_structure_by_structure(
    model64, tmp_path, thermostat, final_K
):
    """Nosé–Hoover chain or Bussi NVT of two molecules, two cells and a slab with its bottom
    layer fixed (two states), each at its own temperature (or ramped from it to 150 K),
    coupled strongly (20 fs) so that the thermostat acts within 20 steps: each structure's
    temperatures, energies, last positions and momenta equal its ``run_md`` alone (ASE's
    ``NoseHooverChainNVT`` with ``FixAtoms`` honoured; ASE's ``Bussi``, each structure's noise
    from its own generator) to 1e-9, the fixed atoms stay put; killed in step 8 and resumed,
    the same to the bit."""
    slab = make_slab(seed=3)
    slab.set_constraint(FixAtoms(mask=slab.positions[:, 2] < slab.positions[:, 2].min() + 1.0))
    frames = [*structures(), slab]
    temperatures = [300.0, 400.0, 500.0, 600.0, 700.0]
    settings = dict(RUN, ensemble="nvt", n_steps=20, thermostat=thermostat)
    settings.update(thermostat_time_fs=20.0, temperature_K=temperatures, restart_every=5)
    settings.update(final_temperature_K=final_K)
    whole = run_batched_md(frames, model64, **settings, restart_path=tmp_path / "whole.npz")
    assert {result.summary()["thermostat"] for result in whole} == {thermostat}
    for k, atoms in enumerate(frames):
        alone_settings = {**settings, "seed": 3 + k, "temperature_K": temperatures[k]}
        alone = run_md(atoms, EquiforceCalculator(model64), **alone_settings)
        for name in ("temperature_K", "potential_energy", "kinetic_energy"):
            np.testing.assert_allclose(
                getattr(whole[k], name), getattr(alone, name), rtol=0, atol=1e-9, err_msg=name
            )
        final, reference = whole[k].final_atoms, alone.final_atoms
        np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-9)
        np.testing.assert_allclose(final.get_momenta(), reference.get_momenta(), atol=1e-9)
    fixed = slab.constraints[0].get_indices()
    assert np.array_equal(whole[4].final_atoms.positions[fixed], slab.positions[fixed])
    model = _killed_after(EquiforceModel(model64), calls=2 + 2 * 7)  # two states
    with pytest.raises(KeyboardInterrupt):
        run_batched_md(frames, model, **settings, restart_path=tmp_path / "killed.npz")
    resumed = run_batched_md(
        frames, model64, **settings, restart_path=tmp_path / "killed.npz", resume=True
    )
    for a, b in zip(whole, resumed, strict=True):
        assert np.array_equal(a.temperature_K, b.temperature_K)
        assert np.array_equal(a.final_atoms.positions, b.final_atoms.positions)
        assert np.array_equal(a.final_atoms.get_momenta(), b.final_atoms.get_momenta())


def test_states_group_structures_by_kind_and_size():
    """3D-periodic cells in some states, molecules and slabs in others."""
    slab = [True, True, False]
    sizes_and_kinds = [(4, True), (3, False), (32, True), (5, slab), (40, True), (2, True)]
    frames = []
    for n, periodic in sizes_and_kinds:
        atoms = bulk("Cu", "fcc", a=3.61) * (n, 1, 1)
        atoms.pbc = periodic
        frames.append(atoms)
    assert state_groups(frames, None) == [[0, 2, 4, 5], [1, 3]]
    assert state_groups(frames, 36) == [[0, 2], [4], [5], [1, 3]]
    assert state_groups(frames, 4) == [[0], [2], [4], [5], [1], [3]]
    with pytest.raises(ValueError, match="must be >= 1"):
        state_groups(frames, 0)


@pytest.mark.parametrize(
    "barostat, anisotropic, mask, couple",
    [
        ("mtk", False, None, None),
        ("mtk", True, None, None),
        ("mtk", True, (True, True, False), None),
        ("berendsen", False, None, None),
        ("berendsen", True, None, None),
        ("berendsen", True, (False, True, True), None),
        ("c-rescale", False, None, None),
        ("c-rescale", True, None, None),
        ("c-rescale", True, (True, False, True), None),
        ("c-rescale", True, (True, True, False), "ab"),
    ],
)
def test_npt_equals_run_md_structure_by_structure(
    model64, tmp_path, barostat, anisotropic, mask, couple
):
    """NPT of two cells in one state (at 1 GPa, strong couplings so that the cells move in 20
    steps): each structure's volumes, pressures, temperatures, last cell and positions equal
    its ``run_md`` NPT alone (ASE's ``IsotropicMTKNPT`` / ``MTKNPT``, ``NPTBerendsen`` /
    ``Inhomogeneous_NPTBerendsen``, the anisotropic ones with their temperature ramped to
    600 K: MTK's masses follow the target; with a cell mask, ASE's ``MaskedMTKNPT``,
    ``Inhomogeneous_NPTBerendsen``'s mask and stochastic cell rescaling's (with a and b
    coupled too: one factor), the cubic cell's held axis unchanged, its free ones moving;
    the isotropic ones each at its own pressure, 1 and 2 GPa, ramped to 3 and 0.5 GPa;
    stochastic cell rescaling, each structure drawing from its own generator, anisotropic
    too: the triclinic cell's deformations without rotation in its frame); killed in step 8
    and resumed, the same to the bit."""
    frames = [make_fcc_cu(repeat=2, seed=1), make_triclinic_cu(seed=4)]
    npt = NPTSettings(
        pressure_GPa=1.0,
        barostat=barostat,
        anisotropic=anisotropic,
        barostat_time_fs=50.0,
        thermostat_time_fs=20.0,
        compressibility_per_GPa=0.05,
        cell_mask=mask,
        couple=couple,
    )
    settings = dict(RUN, ensemble="npt", n_steps=20, npt=npt)
    npts, finals = [npt, npt], [None, None]
    if anisotropic:
        settings["final_temperature_K"] = 600.0
    else:  # a pressure ladder, each structure ramped its own way
        npts = [npt, dataclasses.replace(npt, pressure_GPa=2.0)]
        finals = [3.0, 0.5]
        settings.update(npt=npts, final_pressure_GPa=finals)
    restart = dict(restart_path=tmp_path / "whole.npz", restart_every=5)
    batched = run_batched_md(frames, model64, **settings, **restart)
    for k, atoms in enumerate(frames):
        alone_settings = {**settings, "npt": npts[k], "final_pressure_GPa": finals[k]}
        alone = run_md(atoms, EquiforceCalculator(model64), **{**alone_settings, "seed": 3 + k})
        mine = batched[k]
        assert mine.npt == npts[k] and abs(alone.volume_A3[-1] - alone.volume_A3[0]) > 0.1
        assert mine.pressure_ramp == alone.pressure_ramp
        for name in ("volume_A3", "pressure_GPa", "temperature_K", "potential_energy"):
            np.testing.assert_allclose(
                getattr(mine, name), getattr(alone, name), rtol=1e-12, atol=1e-9, err_msg=name
            )
        final, reference = mine.final_atoms, alone.final_atoms
        np.testing.assert_allclose(final.cell.array, reference.cell.array, rtol=0, atol=1e-9)
        if mask is not None and k == 0:  # the cubic cell's held axis keeps its length
            lengths = np.linalg.norm(final.cell.array, axis=1) / atoms.cell.lengths()
            np.testing.assert_allclose(lengths[~np.array(mask)], 1.0, rtol=0, atol=1e-12)
            assert np.abs(lengths[np.array(mask)] - 1.0).min() > 1e-6
            if couple is not None:  # the coupled vectors by one factor
                np.testing.assert_allclose(lengths[0], lengths[1], rtol=1e-13, atol=0)
        np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-9)
    # one state: a call at the start, one (two: Berendsen) a step; the restart file of step 5
    calls_per_step = 2 if barostat == "berendsen" else 1
    model = _killed_after(EquiforceModel(model64), calls=1 + calls_per_step * 7)
    killed = dict(restart_path=tmp_path / "killed.npz", restart_every=5)
    with pytest.raises(KeyboardInterrupt):
        run_batched_md(frames, model, **settings, **killed)
    resumed = run_batched_md(frames, model64, **settings, **killed, resume=True)
    for a, b in zip(batched, resumed, strict=True):
        assert np.array_equal(a.volume_A3, b.volume_A3)
        assert np.array_equal(a.final_atoms.cell.array, b.final_atoms.cell.array)
        assert np.array_equal(a.final_atoms.positions, b.final_atoms.positions)


def test_restart_files_of_earlier_versions_resume(model64, tmp_path):
    """A batched MTK restart file as equiforce wrote it before Bussi's thermostat (its MTK
    variables under ``group<g>.mtk.*``, no generator states) resumes to the same run."""
    frames = [make_fcc_cu(repeat=2, seed=1)]
    settings = dict(RUN, ensemble="npt", n_steps=10, restart_every=5)
    whole = run_batched_md(frames, model64, **settings)
    path = tmp_path / "old.npz"
    run_batched_md(frames, model64, **{**settings, "n_steps": 5}, restart_path=path)
    with np.load(path) as content:
        arrays = {name.replace(".variables.", ".mtk."): content[name] for name in content.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["generators"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    resumed = run_batched_md(frames, model64, **settings, restart_path=path, resume=True)
    assert np.array_equal(resumed[0].volume_A3, whole[0].volume_A3)
    assert np.array_equal(resumed[0].final_atoms.positions, whole[0].final_atoms.positions)


def test_fixed_atoms_under_c_rescale_move_with_the_cell_as_in_run_md(model64, tmp_path):
    """C-rescale NPT (a and b free, 1 GPa, strong couplings) of a slab in its vacuum with the
    bottom layer held and of a cell with one atom held: each structure's volumes,
    pressures, temperatures, last cell and positions equal its ``run_md`` alone (1e-9; the
    thermostat counting the free atoms only), the held atoms keep their fractional
    coordinates at rest, and a run killed in step 8 and resumed equals it to the bit (from a
    restart file without the free atoms' counts too, as earlier versions wrote it)."""
    slab = make_slab(seed=3)
    slab.pbc = True  # 3D-periodic with its vacuum
    slab.set_constraint(FixAtoms(mask=slab.positions[:, 2] < slab.positions[:, 2].min() + 1.0))
    cell = make_fcc_cu(repeat=2, seed=2)
    cell.set_constraint(FixAtoms([1]))
    frames = [slab, cell]
    npt = NPTSettings(
        pressure_GPa=1.0,
        barostat="c-rescale",
        anisotropic=True,
        barostat_time_fs=50.0,
        thermostat_time_fs=20.0,
        compressibility_per_GPa=0.05,
        cell_mask=(True, True, False),
    )
    settings = dict(RUN, ensemble="npt", n_steps=20, npt=npt, restart_every=5)
    batched = run_batched_md(frames, model64, restart_path=tmp_path / "whole.npz", **settings)
    for k, atoms in enumerate(frames):
        alone = run_md(atoms, EquiforceCalculator(model64), **{**settings, "seed": 3 + k})
        for name in ("volume_A3", "pressure_GPa", "temperature_K", "potential_energy"):
            np.testing.assert_allclose(
                getattr(batched[k], name), getattr(alone, name), rtol=1e-12, atol=1e-9
            )
        final, reference = batched[k].final_atoms, alone.final_atoms
        np.testing.assert_allclose(final.positions, reference.positions, rtol=0, atol=1e-9)
        held = atoms.constraints[0].get_indices()
        start = atoms.get_scaled_positions(wrap=False)[held]
        moved = final.get_scaled_positions(wrap=False)[held]
        np.testing.assert_allclose(moved, start, rtol=0, atol=1e-12)
        assert not final.get_momenta()[held].any()
        assert abs(alone.volume_A3[-1] - alone.volume_A3[0]) > 0.1
    model = _killed_after(EquiforceModel(model64), calls=1 + 7)  # one state: killed in step 8
    killed = dict(restart_path=tmp_path / "killed.npz")
    with pytest.raises(KeyboardInterrupt):
        run_batched_md(frames, model, **settings, **killed)
    path = tmp_path / "killed.npz"
    with np.load(path) as content:  # as written before C-rescale saved the free atoms' counts
        arrays = {name: content[name] for name in content.files if "free_atoms" not in name}
    assert len(arrays) < len(np.load(path).files)
    np.savez(tmp_path / "old.npz", **arrays)
    for restart in (path, tmp_path / "old.npz"):
        resumed = run_batched_md(frames, model64, **settings, restart_path=restart, resume=True)
        for a, b in zip(batched, resumed, strict=True):
            assert np.array_equal(a.volume_A3, b.volume_A3)
            assert np.array_equal(a.final_atoms.positions, b.final_atoms.positions)


def test_what_batched_md_cannot_run_is_refused(model64):
    at_rest = Atoms("Cu", positions=[[0.0, 0.0, 0.0]])  # one atom: no momentum once stationary
    with pytest.raises(ValueError, match=r"structure 1 \(Cu\) starts at rest: Bussi's"):
        nvt = dict(ensemble="nvt", thermostat="bussi", n_steps=2, log_interval=1)
        run_batched_md([make_molecule("CH4"), at_rest], model64, **nvt)
    with pytest.raises(ValueError, match="ensemble must be 'nvt', 'nve' or 'npt', got 'muvt'"):
        run_batched_md([make_fcc_cu()], model64, ensemble="muvt", n_steps=2, log_interval=1)
    npt = dict(ensemble="npt", n_steps=2, log_interval=1)
    with pytest.raises(ValueError, match=r"structure 1 \(CH4\) has pbc .*: NPT needs cells"):
        run_batched_md([make_fcc_cu(), make_molecule("CH4")], model64, **npt)
    two = [make_fcc_cu(), make_fcc_cu(seed=2)]
    mtk, berendsen = NPTSettings(), NPTSettings(barostat="berendsen", pressure_GPa=1.0)
    with pytest.raises(ValueError, match=r"structure 1: NPT settings .* in more than the pres"):
        run_batched_md(two, model64, npt=[mtk, berendsen], **npt)
    with pytest.raises(ValueError, match="1 NPT settings for 2 structures"):
        run_batched_md(two, model64, npt=[mtk], **npt)
    with pytest.raises(ValueError, match="3 final pressures for 2 structures"):
        run_batched_md(two, model64, final_pressure_GPa=[1.0, 2.0, 3.0], **npt)
    with pytest.raises(ValueError, match="a pressure ramp is for NPT, not NVT"):
        run_batched_md(two, model64, final_pressure_GPa=1.0, n_steps=2, log_interval=1)
    with pytest.raises(ValueError, match="batched NPT needs the stress"):
        run_batched_md([make_fcc_cu()], EquiforceModel(model64, compute_stress=False), **npt)
    fixed = make_fcc_cu()
    fixed.set_constraint(FixAtoms([0]))
    with pytest.raises(ValueError, match=r"structure 0 .* has constraints \['FixAtoms'\]"):
        run_batched_md([fixed], model64, **npt)
    fixed.set_constraint(FixBondLength(0, 1))
    with pytest.raises(ValueError, match=r"structure 0 .* has constraints \['FixBondLengths'\]"):
        run_batched_md([fixed], model64, n_steps=2, log_interval=1)
    nh3 = [make_fcc_cu(), make_molecule("CH4"), make_molecule("NH3")]  # NH3 in the 2nd state
    with pytest.raises(ValueError, match=r"structure 2 \(H3N\): element N is unknown"):
        run_batched_md(nh3, model64, n_steps=2, log_interval=1)
    with pytest.raises(ValueError, match="1 trajectory paths for 2 structures"):
        run_batched_md(
            [make_fcc_cu()] * 2, model64, n_steps=2, log_interval=1, trajectory_paths=["a.xyz"]
        )


def test_cli_md_batched_runs_every_frame_and_resumes(model_file, tmp_path):
    write(tmp_path / "start.xyz", structures(), format="extxyz")
    out = tmp_path / "md"
    argv = ["md", model_file, str(tmp_path / "start.xyz"), "--batched", "--out", str(out)]
    argv += ["--steps", "6", "--log-interval", "3", "--restart-every", "3"]
    assert main(argv) == 0
    summary = json.loads((out / "md_summary.json").read_text())
    formulas = [atoms.get_chemical_formula() for atoms in structures()]
    assert [s["formula"] for s in summary["structures"]] == formulas
    assert all(s["n_steps"] == 6 for s in summary["structures"])
    assert len(read(out / "md_0002.traj", ":")) == 3 and (out / "md.png").exists()
    assert main(argv) == 1  # a run is there: --resume continues it
    assert main([*argv[:-6], "--steps", "9", "--log-interval", "3", "--resume"]) == 0
    summary = json.loads((out / "md_summary.json").read_text())
    assert summary["structures"][3]["n_steps"] == 9
    assert len(read(out / "md_0003.traj", ":")) == 4
    ladder = ["md", model_file, str(tmp_path / "start.xyz"), "--steps", "2", "--log-interval", "1"]
    ladder += ["--out", str(tmp_path / "ladder"), "--temperature", "100", "200", "300", "400"]
    assert main([*ladder, "--batched"]) == 0
    summary = json.loads((tmp_path / "ladder" / "md_summary.json").read_text())
    targets = [s["temperature_target_K"] for s in summary["structures"]]
    assert targets == [100.0, 200.0, 300.0, 400.0]
    ladder[ladder.index("--out") + 1] = str(tmp_path / "refused")
    assert main([*ladder[:-1], "--batched"]) == 2  # 3 temperatures for 4 frames
    assert main(ladder) == 2  # one structure, several temperatures


def test_cli_md_batched_npt(model_file, tmp_path, capsys):
    """``md --batched --ensemble npt`` (MTK, the NPT default): volume and pressure per
    structure; ``--pressure`` and ``--pressure-end`` one for all or one per frame (a
    ladder), and one value without ``--batched``."""
    write(tmp_path / "cells.xyz", [make_fcc_cu(repeat=1, seed=1), make_triclinic_cu(seed=4)])
    argv = ["md", model_file, str(tmp_path / "cells.xyz"), "--batched", "--ensemble", "npt"]
    argv += ["--steps", "4", "--log-interval", "2"]
    assert main([*argv, "--pressure", "2", "--out", str(tmp_path / "npt")]) == 0
    assert "V0 -> mean V" in capsys.readouterr().out
    summary = json.loads((tmp_path / "npt" / "md_summary.json").read_text())
    for row in summary["structures"]:
        assert row["pressure_target_GPa"] == 2.0 and len(row["volume_A3"]) == 3
    ladder = ["--pressure", "0", "5", "--pressure-end", "1", "--out", str(tmp_path / "ladder")]
    assert main([*argv, *ladder]) == 0
    rows = json.loads((tmp_path / "ladder" / "md_summary.json").read_text())["structures"]
    assert [row["pressure_target_GPa"] for row in rows] == [0.0, 5.0]
    assert [row["pressure_final_target_GPa"] for row in rows] == [1.0, 1.0]
    alone = ["md", model_file, str(tmp_path / "cells.xyz"), "--ensemble", "npt", "--steps", "2"]
    assert main([*alone, "--pressure", "0", "5", "--out", str(tmp_path / "alone")]) == 2
    assert "--pressure: one value (one per frame with --batched)" in capsys.readouterr().err


def committee_members():
    return [tiny_mace(torch.float64, seed=seed) for seed in (1, 2, 3)]


def test_committee_model_gives_the_committee_calculators_numbers():
    members = committee_members()
    scales = dict(
        force_spread_scale=2.0, energy_spread_scale=1.5, force_spread_scale_by_species={"Au": 3.0}
    )
    frames = [make_fcc_cu(repeat=2, seed=1), make_triclinic_cu(seed=4)]
    model = CommitteeModel(members, **scales)
    out = model(atoms_to_state(frames))
    calculator = CommitteeCalculator(members, **scales)
    start = 0
    for k, atoms in enumerate(frames):
        atoms.calc = calculator
        stop = start + len(atoms)
        assert float(out["energy"][k]) == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(out["forces"][start:stop], atoms.get_forces(), atol=1e-12)
        results = calculator.results
        np.testing.assert_allclose(
            model.force_uncertainty[start:stop], results["force_uncertainty"], atol=1e-12
        )
        assert model.energy_uncertainty[k] == pytest.approx(results["energy_uncertainty"])
        start = stop
    with pytest.raises(ValueError, match="committee member 1 knows"):
        CommitteeModel([members[0], tiny_mace(torch.float64, r_max=4.5)])


@pytest.mark.parametrize("anisotropic", [False, True])
def test_mtk_npt_structures_stopped_by_their_watches_leave_with_their_chains(tmp_path, anisotropic):
    """MTK NPT of three cells in one state with a committee, each watch stopping its cell
    after 3 flagged frames (steps 4, 6 and 11 or 12): each cell's volumes and last cell equal
    its ``run_md`` alone, so the stopped cells' chains and cell momenta left the state with
    them; killed in step 8 (after a stop) and resumed, the same to the bit."""
    members = committee_members()
    frames = [make_fcc_cu(repeat=1, seed=3), make_fcc_cu(repeat=1, seed=4)]
    frames.append(make_triclinic_cu(seed=4))
    npt = NPTSettings(
        pressure_GPa=1.0, anisotropic=anisotropic, barostat_time_fs=50.0, thermostat_time_fs=20.0
    )
    settings = dict(RUN, ensemble="npt", npt=npt, n_steps=20, restart_every=5)

    def run(model, name):
        watches = [UncertaintyWatch(0.3, "flag", stop_after=3) for _ in frames]
        path = tmp_path / f"{name}.npz"
        return run_batched_md(frames, model, watches=watches, restart_path=path, **settings)

    whole = run(CommitteeModel(members), "whole")
    assert [r.n_steps for r in whole] == [4, 6, 12 if anisotropic else 11]
    for k, atoms in enumerate(frames):
        alone = run_md(
            atoms, CommitteeCalculator(members), watch=UncertaintyWatch(0.3, "flag", stop_after=3),
            **{**settings, "seed": 3 + k, "restart_every": 100},
        )  # fmt: skip
        assert whole[k].n_steps == alone.n_steps
        np.testing.assert_allclose(whole[k].volume_A3, alone.volume_A3, rtol=0, atol=1e-9)
        np.testing.assert_allclose(
            whole[k].final_atoms.cell.array, alone.final_atoms.cell.array, rtol=0, atol=1e-9
        )
    with pytest.raises(KeyboardInterrupt):  # one call at the start, one a step
        run(_killed_after(CommitteeModel(members), calls=1 + 7), "killed")
    resumed = run_batched_md(
        frames,
        CommitteeModel(members),
        watches=[UncertaintyWatch(0.3, "flag", stop_after=3) for _ in frames],
        restart_path=tmp_path / "killed.npz",
        resume=True,
        **settings,
    )
    for a, b in zip(whole, resumed, strict=True):
        assert a.n_steps == b.n_steps and np.array_equal(a.volume_A3, b.volume_A3)
        assert np.array_equal(a.final_atoms.cell.array, b.final_atoms.cell.array)


def test_committee_watches_flag_and_stop_as_run_md_alone(tmp_path):
    """Batched NVE with a committee, each watch stopping its structure after 3 flagged
    frames: each structure's trace, flagged frames, steps and last frame are those of its run
    alone (``run_md`` with ``CommitteeCalculator``), the others running on after a stop;
    killed after a stop and resumed, the same."""
    members = committee_members()
    frames = [make_molecule("CH4", seed=2), make_fcc_cu(repeat=1, seed=3)]
    frames.append(make_fcc_cu(repeat=1, seed=4))  # two cells in one state: per-atom slices

    def watches(name):
        return [
            UncertaintyWatch(0.33, "flag", tmp_path / f"{name}_{k}.xyz", stop_after=3)
            for k in range(3)
        ]

    settings = dict(RUN, ensemble="nve", n_steps=20, restart_every=10)

    whole = run_batched_md(
        frames, CommitteeModel(members), watches=watches("whole"),
        restart_path=tmp_path / "whole.npz", **settings,
    )  # fmt: skip
    for k, atoms in enumerate(frames):
        alone = run_md(
            atoms, CommitteeCalculator(members),
            watch=UncertaintyWatch(0.33, "flag", stop_after=3),
            **{**settings, "seed": 3 + k, "restart_every": 100},
        )  # fmt: skip
        mine, reference = whole[k].uncertainty, alone.uncertainty
        assert mine.flagged_steps == reference.flagged_steps  # CH4 0-2, Cu4 12-14
        np.testing.assert_allclose(mine.trace_max, reference.trace_max, rtol=0, atol=1e-9)
        assert whole[k].n_steps == alone.n_steps
        np.testing.assert_allclose(whole[k].time_fs, alone.time_fs)
        np.testing.assert_allclose(
            whole[k].final_atoms.positions, alone.final_atoms.positions, rtol=0, atol=1e-9
        )
    assert [w.n_steps for w in whole] == [2, 14, 20]
    assert len(read(tmp_path / "whole_1.xyz", ":")) == 3
    # two states (CH4; the cells) until CH4 stops after step 2, then one
    model = _killed_after(CommitteeModel(members, compute_stress=False), calls=2 + 2 * 2 + 12)
    with pytest.raises(KeyboardInterrupt):  # killed in step 15: restart file of step 10
        run_batched_md(
            frames, model, watches=watches("killed"), restart_path=tmp_path / "killed.npz",
            **settings,
        )  # fmt: skip
    resumed = run_batched_md(
        frames, CommitteeModel(members), watches=watches("killed"),
        restart_path=tmp_path / "killed.npz", resume=True, **settings,
    )  # fmt: skip
    for k in range(3):
        assert resumed[k].uncertainty.flagged_steps == whole[k].uncertainty.flagged_steps
        assert np.array_equal(resumed[k].uncertainty.trace_max, whole[k].uncertainty.trace_max)
        assert resumed[k].n_steps == whole[k].n_steps
        assert np.array_equal(resumed[k].final_atoms.positions, whole[k].final_atoms.positions)
        killed, straight = tmp_path / f"killed_{k}.xyz", tmp_path / f"whole_{k}.xyz"
        assert killed.read_bytes() == straight.read_bytes()
    stopped = dict(settings, n_steps=5, restart_path=tmp_path / "stopped.npz")
    ch4 = [UncertaintyWatch(0.33, path=tmp_path / "stopped.xyz")]  # stops at step 0
    assert (
        run_batched_md(frames[:1], CommitteeModel(members), watches=ch4, **stopped)[0].n_steps == 0
    )
    with pytest.raises(ValueError, match="stopped every structure"):
        run_batched_md(frames[:1], CommitteeModel(members), watches=ch4, resume=True, **stopped)
    with pytest.raises(ValueError, match="needs a committee"):
        run_batched_md(frames, members[0], watches=[UncertaintyWatch(0.1, "flag")] * 3)


def test_cli_md_batched_with_a_committee_flags_uncertain_frames(tmp_path):
    from equiforce.models import save_model

    paths = [str(save_model(m, tmp_path / f"m{k}.pt")) for k, m in enumerate(committee_members())]
    write(tmp_path / "start.xyz", [make_molecule("CH4", seed=2), make_fcc_cu(repeat=1, seed=3)])
    out = tmp_path / "md"
    argv = ["md", *paths, str(tmp_path / "start.xyz"), "--batched", "--out", str(out)]
    argv += ["--steps", "4", "--log-interval", "2", "--max-uncertainty", "0.33"]
    assert main(argv) == 0  # stop (default): CH4, flagged at step 0, stops; Cu4 runs on
    summary = json.loads((out / "md_summary.json").read_text())
    assert [s["n_steps"] for s in summary["structures"]] == [0, 4]
    assert (out / "uncertainty.png").exists()
    out = tmp_path / "flag"
    argv[argv.index("--out") + 1] = str(out)
    assert main([*argv, "--uncertainty-action", "flag"]) == 0
    summary = json.loads((out / "md_summary.json").read_text())
    assert [s["uncertainty"]["n_flagged"] for s in summary["structures"]] == [5, 0]
    assert len(read(out / "uncertain_0000.xyz", ":")) == 5
    assert (out / "uncertain_0001.xyz").read_text() == ""
