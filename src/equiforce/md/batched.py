"""Batched MD of many structures at once through TorchSim: ``run_batched_md``.

Every structure of a list runs its own NVT (Langevin, Nosé–Hoover chain or Bussi), NVE
(velocity Verlet) or NPT MD, all of them advancing together: each step is one model call on
the whole batch (``equiforce.md.torchsim.EquiforceModel``) and TorchSim's integrator update
(Nosé–Hoover: ``equiforce.md.batched_nhc``'s step, ASE's ``NoseHooverChainNVT``; Bussi:
``batched_bussi``'s; NPT: ``equiforce.md.batched_mtk``'s step, ASE's ``IsotropicMTKNPT`` /
``MTKNPT`` for every cell, two calls and ``equiforce.md.batched_npt``'s, ASE's
``NPTBerendsen``, or ``batched_crescale``'s, ``equiforce.md.crescale``'s). TorchSim 0.3
keeps one ``pbc`` flag per state, so 3D-periodic structures and the others (molecules and
slabs, run through ``equiforce.md.torchsim.CellAxesModel``: a slab periodic along its
periodic axes only) form separate states, and each kind is split into states of at most
``max_batch_atoms`` atoms (bounding a model call's memory); the states step in turn.

Each structure gets what ``run_md`` gives one structure: structure k starts from the
Maxwell–Boltzmann velocities ``run_md(seed=seed + k)`` draws (centre of mass at rest) at its
temperature (one for all, or one per structure: a thermostat of its own); it is
sampled every ``log_interval`` steps, step 0 included, by the same ``Recorder`` (energies,
temperature, bonds), its frames go to its own trajectory and its ``MDResult`` has the same
figures. NVE is velocity Verlet as ASE's, and Nosé–Hoover NVT ASE's ``NoseHooverChainNVT``
step, so each equals ``run_md``'s step for step to float64 round-off (tested). Langevin NVT
is TorchSim's BAOAB Langevin (ASE's Langevin is another splitting and fixes the centre of
mass; here it moves, and the temperature counts 3N degrees of freedom), its noise drawn
from torch's generator seeded with ``seed`` inside a forked generator state, so the caller's
is left alone. Time steps, temperatures and frictions go to TorchSim in ASE's units (eV, Å,
amu; ``ase.units.fs``), TorchSim's own internal ones.
ASE's ``FixAtoms`` is applied in NVT and NVE (``equiforce.md.torchsim.FixedAtomsModel``: no
force on the fixed atoms, which the model sees at their starting positions; after each
Langevin or NVE step they are put back there with zero momenta; under Nosé–Hoover they start
at rest and never move; under stochastic cell rescaling's NPT they start at rest and move
with the cell, their fractional coordinates kept, as ``run_md``'s); other constraints, and
FixAtoms under the other barostats, are refused.

With a committee (``equiforce.md.torchsim.CommitteeModel``: the members' mean drives the
dynamics) each structure can have an ``UncertaintyWatch`` that checks every step's force
spread and flags (writes) the frames over its threshold, as ``run_md``'s does. A watch that
stops its run (action ``"stop"``, or ``stop_after`` flagged frames) ends that structure's MD
at that step, as ``run_md`` would end it alone: the structure leaves its TorchSim state
(``SimState`` slicing) and the others run on; the run ends at ``n_steps`` or when every
structure has stopped. (NVE is then unchanged for the others; Langevin noise, drawn for the
atoms of a state, differs from a run where none stopped, reproducibly.)

TorchSim wraps positions into the cell; the samples, the bonds and the trajectories use
unwrapped positions (each step's displacement, taken to its minimum image, is accumulated),
as ASE's integrators give them.

With ``restart_path`` the state is written every ``restart_every`` steps and at the end
(``equiforce.md.restart``'s file format: each state's structures, positions wrapped and
unwrapped, momenta, energies and forces, the generator's state, each structure's samples, bond
arrays, trajectory length, watch, and the step and final frame of a stopped one), and
``resume`` continues that run bit for bit (tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce.files import atomic_write
from equiforce.md.batched_bussi import BussiCoupling, bussi_nvt_step
from equiforce.md.batched_crescale import crescale_npt_step
from equiforce.md.batched_mtk import MTKCoupling, mtk_npt_step, mtk_variables
from equiforce.md.batched_nhc import (
    NoseHooverCoupling,
    nose_hoover_nvt_step,
    nose_hoover_variables,
)
from equiforce.md.batched_npt import BerendsenCoupling, berendsen_npt_step
from equiforce.md.batched_state import free_atom_counts, twice_kinetic_energy
from equiforce.md.crescale import CRescaleCoupling
from equiforce.md.report import MDResult
from equiforce.md.restart import (
    RESTART_FORMAT,
    Restart,
    numeric_state,
    put_numeric_state,
    restart_to_resume,
)
from equiforce.md.sampling import (
    Frames,
    PressureRamp,
    Recorder,
    RunConditions,
    TemperatureRamp,
    check_final_pressure,
    check_final_temperature,
    check_md_arguments,
    md_result,
    nvt_settings,
    thermalise,
    trajectory_writer,
)

if TYPE_CHECKING:
    from equiforce.md.dynamics import NPTSettings, Thermostat
    from equiforce.md.torchsim import EquiforceModel
    from equiforce.md.uncertainty import UncertaintyWatch
    from equiforce.models.potential import Potential

DEFAULT_BATCH_ATOMS = 5000  # atoms of one model call: batching's gain saturates well below
# the couplings of the steps that are not TorchSim's
Coupling = BerendsenCoupling | MTKCoupling | CRescaleCoupling | NoseHooverCoupling | BussiCoupling


@dataclass
class _Group:
    """Structures that share one TorchSim state (all 3D-periodic or none: molecules, slabs).

    Attributes:
        indices: the structures' positions in the input list.
        ptr: (len(indices) + 1,) first atom of each structure in the state, then the total.
        state: the TorchSim ``MDState``.
        kT: (len(indices),) each structure's thermostat temperature, eV (ASE units).
        unwrapped: (n_atoms, 3) unwrapped positions, Å.
        spreads: a committee's ``force_uncertainty`` (n_atoms,) eV/Å and
            ``energy_uncertainty`` (n_systems,) eV of the state, or None (one model).
        stress: (n_systems, 3, 3) stress of the current positions, eV/Å^3 (ASE sign, no
            kinetic part), where the model computes it (NPT), else None.
        pressure: (len(indices),) each structure's barostat target, eV/Å^3 (NPT), else
            None.
        variables: the per-system variables of Nosé–Hoover NVT (``batched_nhc.
            nose_hoover_variables``: the chains), Bussi NVT and C-rescale NPT
            (``free_atoms``) or MTK NPT
            (``batched_mtk.mtk_variables``: chains, cell momenta, ...), each
            (n_systems, ...), else None.
        fixed: (n_atoms,) bool, the atoms a ``FixAtoms`` holds, or None (none).
        anchor: (n_atoms, 3) Å, the starting positions, where fixed atoms stay (with
            ``fixed``).
    """

    indices: list[int]
    ptr: list[int]
    state: Any
    kT: torch.Tensor
    unwrapped: torch.Tensor
    spreads: tuple[np.ndarray, np.ndarray] | None = None
    stress: torch.Tensor | None = None
    variables: dict[str, torch.Tensor] | None = None
    fixed: torch.Tensor | None = None
    anchor: torch.Tensor | None = None
    pressure: torch.Tensor | None = None


def _spreads(model: EquiforceModel) -> tuple[np.ndarray, np.ndarray] | None:
    """The spreads of the model's last call (a ``CommitteeModel``), or None."""
    if getattr(model, "force_uncertainty", None) is None:
        return None
    return model.force_uncertainty, model.energy_uncertainty


def _new_group(
    model: EquiforceModel,
    atoms: Sequence[Atoms],
    indices: list[int],
    temperatures: Sequence[float],
    coupling: Coupling | None,
    pressures_GPa: Sequence[float] | None = None,
) -> _Group:
    """A group's state at step 0: the structures' positions and momenta, their energies and
    forces (NPT: and stresses and the barostats' targets, GPa, one per structure of
    ``atoms``; Nosé–Hoover, Bussi and MTK: their variables), and their temperatures (K, one
    per structure of ``atoms``).

    Raises:
        ValueError: Bussi's thermostat on a structure at rest (named; it scales momenta).
    """
    from torch_sim.integrators import MDState

    from equiforce.md.torchsim import CellAxesModel, FixedAtomsModel, atoms_to_state, fixed_atoms

    members = [atoms[k] for k in indices]
    state = atoms_to_state(members, model.device, model.dtype)
    momenta = np.concatenate([frame.get_momenta() for frame in members])  # fixed ones zero
    fixed = fixed_atoms(members)
    stepping = CellAxesModel(model)
    if fixed is not None:
        fixed = torch.as_tensor(fixed).to(model.device)
        stepping = FixedAtomsModel(stepping, fixed)
    model.set_systems(members)
    out = stepping(state)
    state = MDState(
        positions=state.positions,
        momenta=torch.as_tensor(momenta, dtype=model.dtype, device=model.device),
        energy=out["energy"],
        forces=out["forces"],
        masses=state.masses,
        cell=state.cell,
        pbc=state.pbc,
        system_idx=state.system_idx,
        atomic_numbers=state.atomic_numbers,
    )
    ptr = np.cumsum([0] + [len(frame) for frame in members]).tolist()
    kT = units.kB * torch.tensor([temperatures[k] for k in indices], dtype=torch.float64)
    kT = kT.to(model.device, model.dtype)
    npt = (MTKCoupling, BerendsenCoupling, CRescaleCoupling)
    stress = out["stress"] if isinstance(coupling, npt) else None
    variables = None
    if isinstance(coupling, MTKCoupling):
        variables = mtk_variables(state, coupling)
    elif isinstance(coupling, NoseHooverCoupling):
        variables = nose_hoover_variables(state, fixed)
    elif isinstance(coupling, (BussiCoupling, CRescaleCoupling)):
        variables = {"free_atoms": free_atom_counts(state, fixed, model.dtype)}
    if isinstance(coupling, (BussiCoupling, CRescaleCoupling)):
        for j, kinetic in enumerate(twice_kinetic_energy(state).tolist()):
            if not kinetic > 0:
                raise ValueError(
                    f"structure {indices[j]} ({members[j].get_chemical_formula()}) starts at "
                    "rest: Bussi's thermostat scales its momenta (start it at a temperature "
                    "> 0, or use another thermostat)"
                )
    unwrapped = state.positions.clone()
    anchor = None if fixed is None else state.positions.clone()
    spreads = _spreads(model)
    pressure = None
    if pressures_GPa is not None:
        pressure = units.GPa * torch.tensor(
            [pressures_GPa[k] for k in indices], dtype=torch.float64
        )
        pressure = pressure.to(kT.device, kT.dtype)
    return _Group(
        indices, ptr, state, kT, unwrapped, spreads, stress, variables, fixed, anchor, pressure
    )


def _without(group: _Group, stopped: set[int]) -> _Group | None:
    """``group`` without the structures ``stopped`` (input positions), or None when none is
    left: their systems and atoms sliced out of the state (``SimState[systems]``)."""
    kept = [j for j, index in enumerate(group.indices) if index not in stopped]
    if len(kept) == len(group.indices):
        return group
    if not kept:
        return None
    atoms_kept = torch.cat([torch.arange(group.ptr[j], group.ptr[j + 1]) for j in kept])
    sizes = [group.ptr[j + 1] - group.ptr[j] for j in kept]
    systems = torch.tensor(kept, device=group.kT.device)
    atoms_kept = atoms_kept.to(group.unwrapped.device)
    return _Group(
        indices=[group.indices[j] for j in kept],
        ptr=np.cumsum([0] + sizes).tolist(),
        state=group.state[kept],
        kT=group.kT[systems],
        unwrapped=group.unwrapped[atoms_kept],
        stress=None if group.stress is None else group.stress[systems],
        variables=None
        if group.variables is None
        else {name: value[systems] for name, value in group.variables.items()},
        fixed=None if group.fixed is None else group.fixed[atoms_kept],
        anchor=None if group.anchor is None else group.anchor[atoms_kept],
        pressure=None if group.pressure is None else group.pressure[systems],
    )


def _advance(group: _Group, integrate: Callable[[_Group], None], model: EquiforceModel) -> None:
    """One integrator step of the group; the unwrapped positions follow by minimum image."""
    before = group.state.positions.clone()
    integrate(group)
    group.spreads = _spreads(model)
    step = group.state.positions - before
    if group.state.pbc:  # undo the wrap: the displacement's nearest lattice image
        cells = group.state.cell[group.state.system_idx]  # (n_atoms, 3, 3), column vectors
        fractional = torch.linalg.solve(cells, step.unsqueeze(-1))
        step = step - (cells @ torch.round(fractional)).squeeze(-1)
    group.unwrapped += step


def _set_frame(
    frame: Atoms, positions, momenta, energy: float, forces, cell=None, stress=None
) -> None:
    """Give ``frame`` these positions (Å), momenta (ASE units), cell ((3, 3) rows, Å; None:
    kept), and energy (eV), forces (eV/Å) and stress ((3, 3) eV/Å^3 or None) as a
    single-point calculator's."""
    frame.calc = None
    if cell is not None:
        frame.set_cell(cell)
    frame.arrays["positions"][:] = positions
    frame.set_momenta(momenta, apply_constraint=False)
    results = {"energy": float(energy), "forces": forces}
    if stress is not None:
        results["stress"] = full_3x3_to_voigt_6_stress(stress)
    frame.calc = SinglePointCalculator(frame, **results)


def _put_frames(group: _Group, atoms: Sequence[Atoms]) -> None:
    """Set each structure's ``Atoms`` to the group's current state (unwrapped positions,
    momenta, and its energy and forces as a single-point calculator; NPT: its cell and
    stress too, the cell being the only one that changes)."""
    state = group.state

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().to(torch.float64).numpy()

    positions, momenta = array(group.unwrapped), array(state.momenta)
    forces, energy = array(state.forces), array(state.energy)
    npt = group.stress is not None
    cells = array(state.cell.transpose(1, 2)) if npt else None  # rows: lattice vectors
    stress = array(group.stress) if npt else None
    for j, index in enumerate(group.indices):
        a, b = group.ptr[j], group.ptr[j + 1]
        _set_frame(
            atoms[index],
            positions[a:b],
            momenta[a:b],
            energy[j],
            forces[a:b],
            None if cells is None else cells[j],
            None if stress is None else stress[j],
        )


def _watch(group: _Group, atoms: Sequence[Atoms], watches, step: int, time_fs: float) -> None:
    """Let each structure's ``UncertaintyWatch`` check the group's current state (its
    ``Atoms`` carrying the committee's spreads as calculator results)."""
    _put_frames(group, atoms)
    force_spread, energy_spread = group.spreads
    for j, index in enumerate(group.indices):
        results = atoms[index].calc.results
        results["force_uncertainty"] = force_spread[group.ptr[j] : group.ptr[j + 1]]
        results["energy_uncertainty"] = float(energy_spread[j])
        watches[index].check(atoms[index], step, time_fs)


def _coupling(
    npt: NPTSettings | None, timestep_fs: float, nvt: tuple[str | None, float | None]
) -> Coupling | None:
    """The couplings in ASE units of the NPT step, or of the Nosé–Hoover or Bussi NVT step
    (``nvt``: the thermostat and its time, fs, or None); None: TorchSim's Langevin or NVE."""
    thermostat, time_fs = nvt
    if thermostat == "nose-hoover":
        return NoseHooverCoupling(dt=timestep_fs * units.fs, tdamp=time_fs * units.fs)
    if thermostat == "bussi":
        return BussiCoupling(dt=timestep_fs * units.fs, taut=time_fs * units.fs)
    if npt is None:
        return None
    dt = timestep_fs * units.fs
    arguments = npt.ase_arguments()
    del arguments["pressure_au"]  # a target of each structure (``_Group.pressure``)
    if npt.barostat == "c-rescale":
        arguments["couple"] = npt.couple
    coupling = {"c-rescale": CRescaleCoupling, "mtk": MTKCoupling}.get(
        npt.barostat, BerendsenCoupling
    )
    return coupling(dt=dt, anisotropic=npt.anisotropic, mask=npt.cell_mask, **arguments)


def _integrator(
    model: EquiforceModel,
    ensemble: str,
    timestep_fs: float,
    friction: float,
    coupling: Coupling | None,
    generators: Sequence[np.random.Generator],
) -> Callable[[_Group], None]:
    """The step of a group in ``ensemble``: TorchSim's Langevin or velocity Verlet
    (``_torchsim_step``), the Nosé–Hoover chain or Bussi's rescaling (``_rescaling_step``), or
    NPT (``equiforce.md.batched_mtk``, ``batched_npt``, ``batched_crescale``: the structures'
    ``generators`` draw its noise)."""
    if isinstance(coupling, (NoseHooverCoupling, BussiCoupling)):
        return _rescaling_step(model, coupling, generators)
    if isinstance(coupling, CRescaleCoupling):
        from equiforce.md.torchsim import FixedAtomsModel

        def crescale(group: _Group) -> None:
            # FixAtoms: no force, so at rest, moving with the cell (no anchor)
            stepping = model if group.fixed is None else FixedAtomsModel(model, group.fixed)
            drawing = [generators[k] for k in group.indices]
            targets = (group.kT, group.pressure, group.variables["free_atoms"])
            args = (group.state, group.stress, *targets, drawing, stepping, coupling)
            group.state, group.stress = crescale_npt_step(*args)

        return crescale
    if isinstance(coupling, MTKCoupling):

        def mtk(group: _Group) -> None:
            targets = (group.kT, group.pressure)
            args = (group.state, group.stress, *targets, group.variables, model, coupling)
            group.state, group.stress = mtk_npt_step(*args)

        return mtk
    if isinstance(coupling, BerendsenCoupling):

        def berendsen(group: _Group) -> None:
            args = (group.state, group.stress, group.kT, group.pressure, model, coupling)
            group.state, group.stress = berendsen_npt_step(*args)

        return berendsen
    return _torchsim_step(model, ensemble, timestep_fs, friction)


def _rescaling_step(
    model: EquiforceModel,
    coupling: NoseHooverCoupling | BussiCoupling,
    generators: Sequence[np.random.Generator],
) -> Callable[[_Group], None]:
    """A group's Nosé–Hoover chain or Bussi step (``equiforce.md.batched_nhc``,
    ``batched_bussi``; the structures' ``generators`` draw Bussi's noise). A group's
    ``FixAtoms`` atoms feel no force and start at rest, so they stay."""
    from equiforce.md.torchsim import FixedAtomsModel

    def rescaled(group: _Group) -> None:
        stepping = model
        if group.fixed is not None:
            stepping = FixedAtomsModel(model, group.fixed, group.anchor)
        state, kT, variables = group.state, group.kT, group.variables
        if isinstance(coupling, NoseHooverCoupling):
            group.state = nose_hoover_nvt_step(state, kT, variables, stepping, coupling)
            return
        drawing = [generators[k] for k in group.indices]
        free = variables["free_atoms"]
        group.state = bussi_nvt_step(state, kT, free, drawing, stepping, coupling)

    return rescaled


def _torchsim_step(
    model: EquiforceModel, ensemble: str, timestep_fs: float, friction: float
) -> Callable[[_Group], None]:
    """A group's step of TorchSim's Langevin (``ensemble="nvt"``) or velocity Verlet (time
    step and friction in ASE's units, each group's temperatures ``kT``). A group's
    ``FixAtoms`` atoms feel no force and stay at their anchors with zero momenta."""
    import torch_sim as ts

    from equiforce.md.torchsim import FixedAtomsModel

    def scalar(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=model.dtype, device=model.device)

    dt, kT = scalar(timestep_fs * units.fs), scalar(0.0)  # kT: given with each state

    def updater(stepping: Any) -> Callable:
        if ensemble == "nvt":
            gamma = scalar(friction / units.fs)
            return ts.nvt_langevin(stepping, dt=dt, kT=kT, gamma=gamma)[1]
        return ts.nve(stepping, dt=dt, kT=kT)[1]

    update = updater(model)

    def torchsim(group: _Group) -> None:
        if group.fixed is None:
            group.state = update(group.state, kT=group.kT)
            return
        # FixAtoms: no forces on the fixed atoms, which the model sees at their anchors
        # (Langevin's noise moves them inside the step); then put back and stopped
        fixed_model = FixedAtomsModel(model, group.fixed, group.anchor)
        state = updater(fixed_model)(group.state, kT=group.kT)
        fixed = group.fixed[:, None]
        state.positions = torch.where(fixed, group.anchor, state.positions)
        state.momenta = state.momenta.masked_fill(fixed, 0.0)
        group.state = state

    return torchsim


def _generator_state(device: torch.device) -> torch.Tensor:
    """State of torch's generator on ``device`` (the one TorchSim's noise draws from)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_generator_state(device: torch.device, state: torch.Tensor) -> None:
    """Set what ``_generator_state`` returned."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _settings(structures: Sequence[Atoms], **settings: Any) -> dict[str, Any]:
    """What defines a batched run (a resumed call must give the same): ``settings`` and the
    structures' atomic numbers."""
    digest = hashlib.sha256()
    for frame in structures:
        digest.update(np.int64(len(frame)).tobytes())
        digest.update(frame.numbers.astype(np.int64).tobytes())
    return {
        "run": "batched",
        **settings,
        "n_structures": len(structures),
        "atomic_numbers_sha256": digest.hexdigest(),
    }


@dataclass
class _Structure:
    """One structure of the run.

    Attributes:
        atoms: its current frame (set from its group's state before each use).
        recorder: its sampler.
        frames: its trajectory writer.
        watch: its ``UncertaintyWatch``, or None.
        generator: its NumPy generator (its start velocities; Bussi's noise).
        stopped_at: the step its watch stopped it at, or None (running).
    """

    atoms: Atoms
    recorder: Recorder
    frames: Frames
    watch: UncertaintyWatch | None
    generator: np.random.Generator
    stopped_at: int | None = None


def _save(
    path: str | os.PathLike,
    groups: Sequence[_Group],
    structures: Sequence[_Structure],
    step: int,
    settings: dict[str, Any],
    wall_time_s: float,
    device: torch.device,
) -> Path:
    """Write the run's restart file after ``step`` steps atomically (module docstring)."""
    meta = {
        "format": RESTART_FORMAT,
        "settings": settings,
        "n_steps_done": step,
        "n_groups": len(groups),
        "n_frames": [s.frames.n_frames for s in structures],
        "trajectory_bytes": [s.frames.flushed_size() for s in structures],
        "wall_time_s": wall_time_s,
        "generators": [s.generator.bit_generator.state for s in structures],
    }
    stopped_at = [-1 if s.stopped_at is None else s.stopped_at for s in structures]
    arrays = {
        "generator": _generator_state(device).cpu().numpy(),
        "stopped_at": np.array(stopped_at, dtype=np.int64),
    }
    for g, group in enumerate(groups):
        state = group.state
        arrays[f"group{g}.indices"] = np.array(group.indices, dtype=np.int64)
        for name, value in (
            ("positions", state.positions),
            ("momenta", state.momenta),
            ("energy", state.energy),
            ("forces", state.forces),
            ("cell", state.cell),
            ("unwrapped", group.unwrapped),
        ):
            arrays[f"group{g}.{name}"] = value.detach().cpu().numpy()
        if group.stress is not None:
            arrays[f"group{g}.stress"] = group.stress.detach().cpu().numpy()
        for name, value in (group.variables or {}).items():
            arrays[f"group{g}.variables.{name}"] = value.detach().cpu().numpy()
    for k, structure in enumerate(structures):
        recorder = structure.recorder
        arrays[f"rows.{k}"] = np.array(recorder.rows, dtype=np.float64).reshape(-1, 4)
        if recorder.cell_rows is not None:  # NPT: volume, pressure
            arrays[f"cell_rows.{k}"] = np.array(recorder.cell_rows, dtype=np.float64).reshape(-1, 2)
        arrays.update(numeric_state(structure.recorder.bonds, f"bonds.{k}"))
        if structure.watch is not None:
            state = structure.watch.state()
            arrays.update({f"watch.{k}.{name}": value for name, value in state.items()})
        if structure.stopped_at is not None:  # its last frame: the result's final atoms
            atoms = structure.atoms
            arrays[f"final.{k}.positions"] = atoms.positions
            arrays[f"final.{k}.momenta"] = atoms.get_momenta()
            arrays[f"final.{k}.energy"] = np.array(atoms.get_potential_energy())
            arrays[f"final.{k}.forces"] = atoms.get_forces()
            arrays[f"final.{k}.cell"] = atoms.cell.array
            if "stress" in atoms.calc.results:
                arrays[f"final.{k}.stress"] = atoms.get_stress(voigt=False)
    arrays["meta"] = np.array(json.dumps(meta))
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _saved_groups(restart: Restart) -> list[list[int]]:
    """The structures (input positions) of each state when ``restart`` was written."""
    n_groups = int(restart.meta["n_groups"])
    return [restart.arrays[f"group{g}.indices"].tolist() for g in range(n_groups)]


def _saved_variable(arrays: dict[str, np.ndarray], g: int, name: str) -> np.ndarray | None:
    """Group ``g``'s saved thermostat/barostat variable ``name`` (``group<g>.variables.<name>``;
    files of batched MTK runs from before 2026-12-06 named it ``group<g>.mtk.<name>``), or
    None where the file has none (C-rescale runs saved no ``free_atoms`` before 2026-12-07:
    the count the structures give is kept)."""
    for key in (f"group{g}.variables.{name}", f"group{g}.mtk.{name}"):
        if key in arrays:
            return arrays[key]
    return None


def _restore(
    restart: Restart,
    groups: Sequence[_Group],
    structures: Sequence[_Structure],
    device: torch.device,
) -> None:
    """Put the state of ``restart`` back into the groups (made of ``_saved_groups``), the
    structures (samples, bonds, watches, generators, stopped ones' step and last frame) and
    torch's generator."""
    arrays = restart.arrays
    for g, group in enumerate(groups):
        state = group.state
        for name in ("positions", "momenta", "energy", "forces", "cell"):
            saved = torch.as_tensor(arrays[f"group{g}.{name}"])
            setattr(state, name, saved.to(device, getattr(state, name).dtype))
        group.unwrapped = torch.as_tensor(arrays[f"group{g}.unwrapped"]).to(device)
        if group.stress is not None:
            group.stress = torch.as_tensor(arrays[f"group{g}.stress"]).to(device)
        if group.variables is not None:
            saved = {name: _saved_variable(arrays, g, name) for name in group.variables}
            group.variables = {
                name: value if saved[name] is None else torch.as_tensor(saved[name]).to(device)
                for name, value in group.variables.items()
            }
    for k, structure in enumerate(structures):
        structure.recorder.rows = [tuple(row) for row in arrays[f"rows.{k}"].tolist()]
        if structure.recorder.cell_rows is not None:
            rows = arrays[f"cell_rows.{k}"].tolist()
            structure.recorder.cell_rows = [tuple(row) for row in rows]
        put_numeric_state(structure.recorder.bonds, f"bonds.{k}", arrays)
        if structure.watch is not None:
            prefix = f"watch.{k}."
            structure.watch.restore(
                {n[len(prefix) :]: v for n, v in arrays.items() if n.startswith(prefix)}
            )
        if "generators" in restart.meta:  # files from before Bussi: their runs drew none
            structure.generator.bit_generator.state = restart.meta["generators"][k]
        if arrays["stopped_at"][k] >= 0:
            structure.stopped_at = int(arrays["stopped_at"][k])
            final = [
                arrays.get(f"final.{k}.{name}")
                for name in ("positions", "momenta", "energy", "forces", "cell", "stress")
            ]
            _set_frame(structure.atoms, *final)
    _set_generator_state(device, torch.as_tensor(arrays["generator"]))


def run_batched_md(
    structures: Sequence[Atoms],
    model: EquiforceModel | Potential | str | os.PathLike,
    ensemble: str = "nvt",
    temperature_K: float | Sequence[float] = 300.0,
    timestep_fs: float = 0.5,
    n_steps: int = 1000,
    friction: float = 0.01,
    trajectory_paths: Sequence[str | os.PathLike] | None = None,
    log_interval: int = 10,
    seed: int = 0,
    progress: bool = False,
    restart_path: str | os.PathLike | None = None,
    restart_every: int = 100,
    resume: bool = False,
    max_batch_atoms: int | None = DEFAULT_BATCH_ATOMS,
    watches: Sequence[UncertaintyWatch] | None = None,
    npt: NPTSettings | Sequence[NPTSettings] | None = None,
    thermostat: Thermostat = "langevin",
    thermostat_time_fs: float = 100.0,
    final_temperature_K: float | Sequence[float] | None = None,
    final_pressure_GPa: float | Sequence[float] | None = None,
) -> list[MDResult]:
    """Run NVT (Langevin, Nosé–Hoover chain or Bussi), NVE or NPT (MTK, Berendsen or
    stochastic cell rescaling) MD of every structure at once (module docstring).

    Args:
        structures: the starting structures (not modified): cells, slabs, molecules; any
            sizes and elements the model knows.
        model: an ``EquiforceModel`` (its device, dtype and precision; keep its stress off for
            speed), or a ``Potential`` / model file (run as ``EquiforceModel(model,
            compute_stress=False)`` on the CPU).
        ensemble: ``"nvt"``, ``"nve"`` or ``"npt"`` (3D-periodic cells).
        temperature_K: thermostat and initial-velocity temperature, K: one for all, or one
            per structure (e.g. a temperature ladder of walkers).
        timestep_fs: time step, fs.
        n_steps: number of steps (all structures but those a watch stops).
        friction: Langevin friction, 1/fs (NVT only).
        trajectory_paths: one ``.traj`` / ``.xyz`` file per structure for every
            ``log_interval``-th frame, or None.
        log_interval: sampling and trajectory interval, steps (at most ``n_steps``).
        seed: structure k's velocities are ``run_md(seed=seed + k)``'s; the Langevin noise is
            torch's generator seeded with ``seed``.
        progress: show a tqdm progress bar.
        restart_path: the run's restart file (``.npz``), or None (none written).
        restart_every: steps between two restart files, >= 1.
        resume: continue the run of ``restart_path`` exactly: ``structures`` must be its
            starting structures and the other arguments its settings (a differing one is
            refused by name); ``n_steps`` may exceed its first length.
        max_batch_atoms: the most atoms of one model call (a larger structure runs alone);
            None: one call per kind (periodic / not). A setting of the run (it decides how
            the Langevin noise is drawn).
        watches: one ``UncertaintyWatch`` per structure (``model`` a ``CommitteeModel``, the
            watches of one setting), checking every step's committee force spread; one that
            stops its run ends its structure's MD there. Each result carries its watch's
            summary.
        npt: the NPT coupling (``ensemble="npt"``; None: ``NPTSettings()``, MTK isotropic at
            0 GPa, as ``run_md``'s; each structure's run equals its ``run_md`` NPT alone): one
            for all, or one per structure differing in the pressure only (a pressure ladder:
            an equation of state at temperature in one run). The model must compute the
            stress.
        thermostat: NVT's thermostat, ``"langevin"`` (TorchSim's, ``friction``),
            ``"nose-hoover"`` (ASE's ``NoseHooverChainNVT`` for every structure, damping
            ``thermostat_time_fs``) or ``"bussi"`` (each structure drawing from its own
            generator); under the latter two each structure's run equals its ``run_md``
            alone.
        thermostat_time_fs: the Nosé–Hoover chain's damping or Bussi's time constant, fs.
        final_temperature_K: NVT or NPT: ramp each structure's thermostat target linearly
            from its temperature to this (one for all, or one per structure) over the
            ``n_steps``, as ``run_md``'s; None: constant targets.
        final_pressure_GPa: NPT: ramp each structure's barostat target linearly from its
            ``npt.pressure_GPa`` to this (one for all, or one per structure) over the
            ``n_steps``, as ``run_md``'s; None: constant targets.

    Returns:
        One ``MDResult`` per structure, in order (``n_steps``: the steps it ran;
        ``wall_time_s``: the whole batch's).

    Raises:
        ValueError: an ensemble other than NVT/NVE/NPT, a structure not 3D-periodic in NPT,
            a model without stress in NPT, a structure with constraints, bad step counts, or
            a resumed call that differs from the run or whose structures have all stopped.
    """
    from tqdm.auto import tqdm

    from equiforce.md.torchsim import CellAxesModel

    check_md_arguments(ensemble, n_steps, log_interval, friction, thermostat, thermostat_time_fs)
    npts = _check_npt(ensemble, npt, structures)
    first_npt = None if npts is None else npts[0]  # the barostat all of them share
    ramps = _ramps(ensemble, final_temperature_K, len(structures), n_steps)
    pressure_ramps = _pressure_ramps(ensemble, final_pressure_GPa, len(structures), n_steps)
    _check_constraints(structures, first_npt)
    _check_outputs(structures, trajectory_paths, restart_every)
    model = _checked_model(model, structures, first_npt, watches)
    temperatures = _temperatures(temperature_K, len(structures))
    settings = _settings(
        structures,
        ensemble=ensemble,
        temperature_K=temperature_K if np.ndim(temperature_K) == 0 else temperatures,
        timestep_fs=timestep_fs,
        **nvt_settings(ensemble, friction, thermostat, thermostat_time_fs),
        log_interval=log_interval,
        seed=seed,
        max_batch_atoms=max_batch_atoms,
        uncertainty_watch=watches[0].settings() if watches else None,
        npt=_npt_setting(npt, npts),
        fixed_atoms=_fixed_atoms_setting(structures),
        temperature_ramp=None if ramps is None else [dataclasses.asdict(r) for r in ramps],
        pressure_ramp=None
        if pressure_ramps is None
        else [dataclasses.asdict(r) for r in pressure_ramps],
    )
    restart = restart_to_resume(restart_path, resume, settings, n_steps)
    atoms, generators = _thermalised(structures, temperatures, seed)
    nvt = (settings["nvt_thermostat"], settings["thermostat_time_fs"])
    coupling = _coupling(first_npt, timestep_fs, nvt)
    pressures = None if npts is None else [settings.pressure_GPa for settings in npts]
    groups = [
        _new_group(model, atoms, indices, temperatures, coupling, pressures)
        for indices in _group_indices(atoms, restart, max_batch_atoms)
    ]
    stepping = CellAxesModel(model)
    integrate = _integrator(stepping, ensemble, timestep_fs, friction, coupling, generators)
    device = torch.device(model.device)
    paths = [None] * len(atoms) if trajectory_paths is None else [Path(p) for p in trajectory_paths]
    step = 0 if restart is None else restart.n_steps_done
    run = _Run(atoms, generators, groups, watches, timestep_fs, step, first_npt)
    run.thermostat_targets(thermostat if ensemble == "nvt" else None, temperatures, ramps)
    run.barostat_targets(npts, pressure_ramps)
    wall_before = 0.0 if restart is None else restart.wall_time_s
    start = time.perf_counter()

    def save() -> None:
        wall = wall_before + time.perf_counter() - start
        _save(restart_path, run.groups, run.structures, run.step, settings, wall, device)

    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        contextlib.ExitStack() as stack,
    ):
        stack.callback(model.set_systems, None)  # the groups' structures, named per step
        run.open_trajectories(paths, restart, stack)
        if restart is None:
            torch.manual_seed(seed)
            for watch in watches or ():
                watch.begin()
        else:
            _restore(restart, run.groups, run.structures, device)
        description = f"batched {ensemble.upper()} MD"
        bar = stack.enter_context(
            tqdm(total=n_steps, initial=step, disable=not progress, desc=description, unit="step")
        )
        if restart is None:
            run.sample()
            run.check_spreads()
        while run.step < n_steps and run.groups:
            run.advance(integrate, model)
            bar.update(1)
            if run.step % log_interval == 0:
                run.sample()
            run.check_spreads()
            if restart_path is not None and run.step % restart_every == 0:
                save()
        if restart_path is not None:
            save()
    wall_time = wall_before + time.perf_counter() - start
    return run.results(paths, wall_time, ensemble)


class _Run:
    """A batched run between two steps: its structures (input order), the groups of those
    still running and the step.

    Args:
        atoms: the structures' working copies (set from their groups' states before use).
        generators: the structures' NumPy generators.
        groups: the groups (TorchSim states) of the running structures.
        watches: one ``UncertaintyWatch`` per structure, or None.
        timestep_fs: time step, fs.
        step: steps done.
        npt: the barostat the structures share (their samples record the cells: volume,
            pressure), or None.
    """

    def __init__(
        self,
        atoms: list[Atoms],
        generators: list[np.random.Generator],
        groups: list[_Group],
        watches: Sequence[UncertaintyWatch] | None,
        timestep_fs: float,
        step: int,
        npt: NPTSettings | None,
    ) -> None:
        self.atoms, self.generators, self.groups, self.watches = atoms, generators, groups, watches
        self.timestep_fs, self.step, self._npt = timestep_fs, step, npt
        self.structures: list[_Structure] = []
        self.temperatures: list[float] = []
        self.ramps: list[TemperatureRamp] | None = None
        self.thermostat: str | None = None
        self.npts: list[NPTSettings] | None = None
        self.pressure_ramps: list[PressureRamp] | None = None

    def thermostat_targets(
        self,
        thermostat: str | None,
        temperatures: list[float],
        ramps: list[TemperatureRamp] | None,
    ) -> None:
        """Give the run its NVT thermostat (None: none) and the structures their (start)
        temperatures, K, and ramps (None: constant targets)."""
        self.thermostat, self.temperatures, self.ramps = thermostat, temperatures, ramps

    def barostat_targets(
        self, npts: list[NPTSettings] | None, ramps: list[PressureRamp] | None
    ) -> None:
        """Give the structures their NPT settings (their start pressures; None: no NPT) and
        pressure ramps (None: constant targets)."""
        self.npts, self.pressure_ramps = npts, ramps

    def time_fs(self) -> float:
        """The run's time, fs."""
        return self.step * self.timestep_fs

    def open_trajectories(
        self, paths: Sequence[Path | None], restart: Restart | None, stack: contextlib.ExitStack
    ) -> None:
        """Each structure's recorder and trajectory writer (entered on ``stack``; a resumed
        trajectory cut back to the restart file's frames)."""
        for k, (path, frame) in enumerate(zip(paths, self.atoms, strict=True)):
            resumed = None
            if restart is not None:
                resumed = (restart.meta["n_frames"][k], restart.trajectory_bytes[k])
            self.structures.append(
                _Structure(
                    frame,
                    Recorder(frame, self.time_fs, self._npt),
                    stack.enter_context(trajectory_writer(path, frame, resumed)),
                    self.watches[k] if self.watches else None,
                    self.generators[k],
                )
            )

    def advance(self, integrate: Callable[[_Group], None], model: EquiforceModel) -> None:
        """One step of every group (with ramps, at the step's targets)."""
        for group in self.groups:
            self._retarget(group)
            model.set_systems([self.atoms[k] for k in group.indices])  # their charge, spin
            _advance(group, integrate, model)
        self.step += 1

    def _retarget(self, group: _Group) -> None:
        """Set the group's thermostat targets (``kT``) and barostat targets (``pressure``) to
        the ramps' at the coming step (where there are ramps)."""
        step = self.step + 1
        if self.ramps is not None:
            targets = [self.ramps[k].target(self.temperatures[k], step) for k in group.indices]
            kT = units.kB * torch.tensor(targets, dtype=torch.float64)
            group.kT = kT.to(group.kT.device, group.kT.dtype)
        if self.pressure_ramps is not None:
            ramps, npts = self.pressure_ramps, self.npts
            targets = [ramps[k].target(npts[k].pressure_GPa, step) for k in group.indices]
            pressure = units.GPa * torch.tensor(targets, dtype=torch.float64)
            group.pressure = pressure.to(group.pressure.device, group.pressure.dtype)

    def sample(self) -> None:
        """Sample the running structures and write their frames."""
        for group in self.groups:
            _put_frames(group, self.atoms)
            for index in group.indices:
                self.structures[index].recorder.sample()
                self.structures[index].frames.write()

    def check_spreads(self) -> None:
        """Let the watches check the step (after its samples, as ``run_md``'s observers) and
        take the structures they stop out of their groups."""
        if not self.watches:
            return
        for group in self.groups:
            _watch(group, self.atoms, self.watches, self.step, self.time_fs())
        stopped = {k for group in self.groups for k in group.indices if self.watches[k].should_stop}
        for k in stopped:
            self.structures[k].stopped_at = self.step
        kept = (_without(group, stopped) for group in self.groups)
        self.groups = [group for group in kept if group is not None]

    def results(
        self,
        paths: Sequence[Path | None],
        wall_time_s: float,
        ensemble: str,
    ) -> list[MDResult]:
        """One ``MDResult`` per structure, the running ones ending at the current state."""
        for group in self.groups:
            _put_frames(group, self.atoms)
        results = []
        for k, (s, path) in enumerate(zip(self.structures, paths, strict=True)):
            ramp = None if self.ramps is None else self.ramps[k]
            conditions = RunConditions(
                ensemble,
                self.timestep_fs,
                self.temperatures[k],
                None if self.npts is None else self.npts[k],
                ramp,
                self.thermostat,
                None if self.pressure_ramps is None else self.pressure_ramps[k],
            )
            steps = self.step if s.stopped_at is None else s.stopped_at
            results.append(md_result(s.recorder, steps, conditions, path, wall_time_s, s.watch))
        return results


def _checked_model(
    model: EquiforceModel | Potential | str | os.PathLike,
    structures: Sequence[Atoms],
    npt: NPTSettings | None,
    watches: Sequence[UncertaintyWatch] | None,
) -> EquiforceModel:
    """The run's TorchSim model (a ``Potential`` or file: on the CPU, stress for NPT only).

    Raises:
        ValueError: NPT with a model without stress, an element the model lacks (the
            structure named), watches that do not fit the structures or the model.
    """
    from equiforce.md.torchsim import EquiforceModel, check_elements

    if not isinstance(model, EquiforceModel):
        model = EquiforceModel(model, compute_stress=npt is not None)
    if npt is not None and not model.compute_stress:
        raise ValueError("batched NPT needs the stress: a model with compute_stress=True")
    check_elements(structures, model)
    _check_watches(watches, structures, model)
    return model


def _check_outputs(
    structures: Sequence[Atoms],
    trajectory_paths: Sequence[str | os.PathLike] | None,
    restart_every: int,
) -> None:
    """Raise unless there is one trajectory path per structure (or none) and
    ``restart_every`` >= 1."""
    if restart_every < 1:
        raise ValueError(f"restart_every must be >= 1, got {restart_every}")
    if trajectory_paths is not None and len(trajectory_paths) != len(structures):
        raise ValueError(
            f"{len(trajectory_paths)} trajectory paths for {len(structures)} structures"
        )


def _fixed_atoms_setting(structures: Sequence[Atoms]) -> dict[str, list[int]] | None:
    """The run setting of the structures' ``FixAtoms``: each constrained structure's (by its
    position, as a string) fixed atoms' indices, or None (none)."""
    fixed = {
        str(k): frame.constraints[0].get_indices().tolist()
        for k, frame in enumerate(structures)
        if frame.constraints
    }
    return fixed or None


def _thermalised(
    structures: Sequence[Atoms], temperatures: Sequence[float], seed: int
) -> tuple[list[Atoms], list[np.random.Generator]]:
    """Copies of the structures without calculators, structure k with ``run_md(seed=seed +
    k)``'s Maxwell–Boltzmann momenta at its temperature (K), and each structure's generator
    after drawing them (``run_md``'s, which its Bussi thermostat draws from next)."""
    atoms = [frame.copy() for frame in structures]
    generators = [np.random.default_rng(seed + k) for k in range(len(structures))]
    for frame, temperature, generator in zip(atoms, temperatures, generators, strict=True):
        frame.calc = None
        thermalise(frame, temperature, generator)
    return atoms, generators


def _group_indices(
    atoms: Sequence[Atoms], restart: Restart | None, max_batch_atoms: int | None
) -> list[list[int]]:
    """The structures of each TorchSim state: new groups, or those of the restart file.

    Raises:
        ValueError: the restart file's run has no running structure left.
    """
    from equiforce.md.torchsim import state_groups

    if restart is None:
        return state_groups(atoms, max_batch_atoms)
    indices = _saved_groups(restart)
    if not indices:
        raise ValueError(
            f"{restart.path}: the uncertainty watches stopped every structure of this run "
            "(see the results' uncertainty summaries): there is nothing to resume"
        )
    return indices


def _check_npt(
    ensemble: str,
    npt: NPTSettings | Sequence[NPTSettings] | None,
    structures: Sequence[Atoms],
) -> list[NPTSettings] | None:
    """Each structure's NPT coupling in a batched run (None unless ``ensemble`` is
    ``"npt"``).

    Raises:
        ValueError: NPT settings without NPT, not one per structure, settings that differ
            in more than the pressure (one barostat drives the batch), or a structure not
            periodic in 3D (named).
    """
    from equiforce.md.dynamics import NPTSettings

    if ensemble != "npt":
        if npt is not None:
            raise ValueError(f"NPT settings given for ensemble {ensemble!r}")
        return None
    if npt is None or isinstance(npt, NPTSettings):
        npts = [npt or NPTSettings()] * len(structures)
    else:
        npts = list(npt)
    if len(npts) != len(structures):
        raise ValueError(f"{len(npts)} NPT settings for {len(structures)} structures")
    shared = dataclasses.replace(npts[0], pressure_GPa=0.0)
    for k, settings in enumerate(npts):
        if dataclasses.replace(settings, pressure_GPa=0.0) != shared:
            raise ValueError(
                f"structure {k}: NPT settings {settings} differ from structure 0's "
                f"{npts[0]} in more than the pressure: one barostat drives the batch"
            )
    for k, frame in enumerate(structures):
        if not frame.pbc.all():
            raise ValueError(
                f"structure {k} ({frame.get_chemical_formula()}) has pbc {frame.pbc.tolist()}: "
                "NPT needs cells periodic in 3D"
            )
    return npts


def _npt_setting(
    npt: NPTSettings | Sequence[NPTSettings] | None, npts: list[NPTSettings] | None
) -> dict | list[dict] | None:
    """The run's NPT setting: one coupling's fields (as given for all: so runs of earlier
    versions resume), or each structure's."""
    from equiforce.md.dynamics import NPTSettings

    if npts is None:
        return None
    if npt is None or isinstance(npt, NPTSettings):
        return npts[0].setting()
    return [settings.setting() for settings in npts]


def _check_constraints(structures: Sequence[Atoms], npt: NPTSettings | None) -> None:
    """Raise unless every constraint is one ``FixAtoms`` (applied in NVT, NVE and
    stochastic cell rescaling's NPT)."""
    for k, frame in enumerate(structures):
        name = f"structure {k} ({frame.get_chemical_formula()})"
        kinds = [type(constraint).__name__ for constraint in frame.constraints]
        held = npt is None or npt.barostat == "c-rescale"
        if kinds and (kinds != ["FixAtoms"] or not held):
            raise ValueError(
                f"{name} has constraints {kinds}: batched MD applies one FixAtoms, in NVT, "
                "NVE and the c-rescale barostat's NPT; run the structure with run_md "
                "(equiforce md without --batched)"
            )


def _pressure_ramps(
    ensemble: str,
    final_pressure_GPa: float | Sequence[float] | None,
    n_structures: int,
    n_steps: int,
) -> list[PressureRamp] | None:
    """Each structure's ramp to its final pressure over ``n_steps`` (None: no ramps).

    Raises:
        ValueError: not NPT, not one final pressure per structure, or one not finite.
    """
    if final_pressure_GPa is None:
        return None
    finals = _one_each(final_pressure_GPa, n_structures, "final pressures")
    for final in finals:
        check_final_pressure(ensemble, final)
    return [PressureRamp(final, n_steps) for final in finals]


def _ramps(
    ensemble: str,
    final_temperature_K: float | Sequence[float] | None,
    n_structures: int,
    n_steps: int,
) -> list[TemperatureRamp] | None:
    """Each structure's ramp to its final temperature over ``n_steps`` (None: no ramps).

    Raises:
        ValueError: NVE, not one final temperature per structure, or one not positive.
    """
    if final_temperature_K is None:
        return None
    finals = _temperatures(final_temperature_K, n_structures)
    for final in finals:
        check_final_temperature(ensemble, final)
    return [TemperatureRamp(final, n_steps) for final in finals]


def _one_each(values: float | Sequence[float], n_structures: int, what: str) -> list[float]:
    """One value per structure from one for all or one each (``what``: their name, plural).

    Raises:
        ValueError: not one per structure.
    """
    each = [float(values)] * n_structures if np.ndim(values) == 0 else [float(v) for v in values]
    if len(each) != n_structures:
        raise ValueError(f"{len(each)} {what} for {n_structures} structures")
    return each


def _temperatures(temperature_K: float | Sequence[float], n_structures: int) -> list[float]:
    """One temperature (K) per structure from one for all or one each.

    Raises:
        ValueError: not one per structure, or one not positive.
    """
    temperatures = _one_each(temperature_K, n_structures, "temperatures")
    for k, temperature in enumerate(temperatures):
        if temperature <= 0:
            raise ValueError(f"structure {k}: temperature {temperature} K, must be > 0")
    return temperatures


def _check_watches(watches, structures: Sequence[Atoms], model: EquiforceModel) -> None:
    """Raise unless ``watches`` is None or one watch per structure, all of one setting, of a
    committee."""
    if watches is None:
        return
    if len(watches) != len(structures):
        raise ValueError(f"{len(watches)} uncertainty watches for {len(structures)} structures")
    if not hasattr(model, "force_uncertainty"):
        raise ValueError("watching the uncertainty needs a committee (a CommitteeModel)")
    for k, watch in enumerate(watches):
        if watch.settings() != watches[0].settings():
            raise ValueError(f"watch {k} has other settings than watch 0")
