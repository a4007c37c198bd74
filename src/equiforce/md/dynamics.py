"""Molecular dynamics through ASE: ``run_md``, with its samples, trajectory and restarts.

``run_md`` runs Langevin NVT, velocity-Verlet NVE or NPT from Maxwell–Boltzmann velocities
(seeded), writes the trajectory and returns an ``MDResult`` (``equiforce.md.report``). NPT
(3D-periodic cells) uses ASE's Martyna–Tobias–Klein integrators with Nosé–Hoover chains
(``IsotropicMTKNPT``; ``MTKNPT`` anisotropic: every cell component fluctuates) or, as the
simple option, Berendsen coupling (``NPTBerendsen``; ``Inhomogeneous_NPTBerendsen``
anisotropic). Every ``log_interval`` steps, step 0 included, it samples the energies and the
temperature (NPT: volume, and pressure with its ideal-gas part) and follows the bonds
(``equiforce.md.stability``); with a restart file it can stop and go on exactly
(``equiforce.md.restart``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from equiforce.md.report import MDResult
from equiforce.md.restart import Restart, keep_frames, load_restart, save_restart
from equiforce.md.stability import BondMonitor, energy_drift

if TYPE_CHECKING:
    from equiforce.md.uncertainty import UncertaintyWatch

Ensemble = Literal["nvt", "nve", "npt"]
Barostat = Literal["mtk", "berendsen"]
BAROSTATS = ("mtk", "berendsen")


@dataclass(frozen=True)
class NPTSettings:
    """Pressure coupling of an NPT run.

    Attributes:
        pressure_GPa: target (external, hydrostatic) pressure, GPa.
        barostat: ``"mtk"`` (Martyna–Tobias–Klein with Nosé–Hoover chains: samples the NPT
            ensemble) or ``"berendsen"`` (first-order relaxation of pressure and temperature:
            robust for equilibration, does not sample the ensemble's fluctuations).
        anisotropic: let every cell component fluctuate (MTK: ``MTKNPT``; Berendsen: each
            axis scaled by its own pressure) instead of a uniform scaling of the cell.
        barostat_time_fs: barostat damping (MTK ``pdamp``) or relaxation (Berendsen ``taup``)
            time, fs; ~1000 fs is safe for metals, ~100 timesteps at least.
        thermostat_time_fs: thermostat damping (MTK ``tdamp``) or relaxation (Berendsen
            ``taut``) time, fs.
        compressibility_per_GPa: Berendsen's coupling compressibility, 1/GPa (the material's
            own, order 0.01 for metals; it only scales how fast the volume relaxes).
    """

    pressure_GPa: float = 0.0
    barostat: Barostat = "mtk"
    anisotropic: bool = False
    barostat_time_fs: float = 1000.0
    thermostat_time_fs: float = 100.0
    compressibility_per_GPa: float = 0.01

    def __post_init__(self):
        if self.barostat not in BAROSTATS:
            raise ValueError(f"barostat must be one of {BAROSTATS}, got {self.barostat!r}")
        for name in ("barostat_time_fs", "thermostat_time_fs", "compressibility_per_GPa"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NPT {name} must be positive, got {getattr(self, name)}")


class _Frames:
    """Writes the current frame to the run's trajectory and counts the frames written."""

    def __init__(self, write_frame: Callable[[], None], handle=None, n_frames: int = 0):
        self._write_frame = write_frame
        self._handle = handle
        self.n_frames = n_frames

    def write(self) -> None:
        """Write the current frame (an MD observer)."""
        self._write_frame()
        self.n_frames += 1

    def flushed_size(self) -> int | None:
        """An extended XYZ file's size after flushing it, bytes (None: ``.traj`` or none)."""
        if self._handle is None:
            return None
        self._handle.flush()
        return self._handle.tell()


@contextlib.contextmanager
def _trajectory_writer(path: Path | None, atoms: Atoms, restart: Restart | None = None):
    """Yield the ``_Frames`` of ``path`` (.traj or .xyz/.extxyz); with ``restart``, the file
    cut back to the frames it counted and appended to."""
    if path is None:
        yield _Frames(lambda: None)
        return
    if path.suffix not in (".traj", ".xyz", ".extxyz"):
        raise ValueError(f"trajectory {path}: use a .traj, .xyz or .extxyz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, n_frames = "w", 0
    if restart is not None:
        keep_frames(path, restart.n_frames, restart.trajectory_bytes)
        mode, n_frames = "a", restart.n_frames
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(str(path), mode, atoms) as trajectory:
            yield _Frames(trajectory.write, None, n_frames)
    else:
        from ase.io import write

        with open(path, mode) as handle:
            yield _Frames(lambda: write(handle, atoms, format="extxyz"), handle, n_frames)


class _Recorder:
    """Samples time, energies, temperature (``track_cell``: volume, pressure); feeds bonds."""

    def __init__(self, atoms: Atoms, clock_fs: Callable[[], float], track_cell: bool = False):
        self.atoms = atoms
        self.clock_fs = clock_fs
        self.bonds = BondMonitor(atoms)
        self.rows: list[tuple[float, float, float, float]] = []
        self.cell_rows: list[tuple[float, float]] | None = [] if track_cell else None

    def sample(self) -> None:
        """Record the current state (an MD observer)."""
        self.bonds.update(self.atoms)
        self.rows.append(
            (
                self.clock_fs(),
                self.atoms.get_potential_energy(),
                self.atoms.get_kinetic_energy(),
                self.atoms.get_temperature(),
            )
        )
        if self.cell_rows is not None:
            stress = self.atoms.get_stress(include_ideal_gas=True)
            self.cell_rows.append((self.atoms.get_volume(), -stress[:3].mean() / units.GPa))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """time_fs, potential (eV), kinetic (eV), temperature (K), each (n_samples,)."""
        return tuple(np.array(column, dtype=np.float64) for column in zip(*self.rows, strict=True))

    def cell_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Volume (Å^3) and pressure (GPa), each (n_samples,), or None without ``track_cell``."""
        if self.cell_rows is None:
            return None, None
        volume, pressure = zip(*self.cell_rows, strict=True)
        return np.array(volume, dtype=np.float64), np.array(pressure, dtype=np.float64)


def _barostat(atoms: Atoms, temperature_K: float, timestep_fs: float, npt: NPTSettings):
    """ASE's NPT integrator for ``npt`` (MTK with Nosé–Hoover chains, or Berendsen)."""
    pressure_au = npt.pressure_GPa * units.GPa
    if npt.barostat == "mtk":
        from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT

        return (MTKNPT if npt.anisotropic else IsotropicMTKNPT)(
            atoms,
            timestep_fs * units.fs,
            temperature_K=temperature_K,
            pressure_au=pressure_au,
            tdamp=npt.thermostat_time_fs * units.fs,
            pdamp=npt.barostat_time_fs * units.fs,
        )
    from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen, NPTBerendsen

    return (Inhomogeneous_NPTBerendsen if npt.anisotropic else NPTBerendsen)(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        pressure_au=pressure_au,
        taut=npt.thermostat_time_fs * units.fs,
        taup=npt.barostat_time_fs * units.fs,
        compressibility_au=npt.compressibility_per_GPa / units.GPa,
    )


def _integrator(
    atoms: Atoms,
    ensemble: str,
    temperature_K: float,
    timestep_fs: float,
    friction: float,
    rng,
    npt: NPTSettings | None = None,
):
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    if ensemble == "npt":
        return _barostat(atoms, temperature_K, timestep_fs, npt or NPTSettings())
    if ensemble == "nvt":
        # ASE >= 3.28: Langevin's own ``fixcm`` samples a biased distribution; use FixCom.
        atoms.set_constraint(atoms.constraints + [FixCom()])
        return Langevin(
            atoms,
            timestep_fs * units.fs,
            temperature_K=temperature_K,
            friction=friction / units.fs,
            fixcm=False,
            rng=rng,
        )
    return VelocityVerlet(atoms, timestep_fs * units.fs)


def _thermalise(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at ``temperature_K`` from ``rng``, centre of mass at rest."""
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ase < 3.29 only has the (since deprecated) older name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)


def _check_md_arguments(ensemble: str, n_steps: int, log_interval: int, friction: float) -> None:
    if ensemble not in ("nvt", "nve", "npt"):
        raise ValueError(f"ensemble must be 'nvt', 'nve' or 'npt', got {ensemble!r}")
    if n_steps < 1 or log_interval < 1:
        raise ValueError(f"n_steps and log_interval must be >= 1, got {n_steps}, {log_interval}")
    if log_interval > n_steps:
        raise ValueError(f"log_interval ({log_interval}) must not exceed n_steps ({n_steps})")
    if ensemble == "nvt" and friction <= 0:
        raise ValueError(f"Langevin friction must be positive, got {friction} per fs")


def _restart_to_resume(
    restart_path: str | os.PathLike | None,
    resume: bool,
    settings: dict,
    n_steps: int,
) -> Restart | None:
    """The restart file ``resume`` continues, checked against this call (None: a new run)."""
    if not resume:
        return None
    if restart_path is None:
        raise ValueError("resume needs the restart_path of the run to continue")
    restart = load_restart(restart_path)
    restart.check_settings(settings)
    if restart.n_steps_done >= n_steps:
        raise ValueError(
            f"{restart_path}: the run has taken {restart.n_steps_done} steps already; give "
            f"more than that as the number of steps to extend it"
        )
    return restart


def run_md(
    atoms: Atoms,
    calculator: Calculator,
    ensemble: Ensemble = "nvt",
    temperature_K: float = 300.0,
    timestep_fs: float = 0.5,
    n_steps: int = 1000,
    friction: float = 0.01,
    trajectory_path: str | os.PathLike | None = None,
    log_interval: int = 10,
    seed: int = 0,
    progress: bool = False,
    npt: NPTSettings | None = None,
    watch: UncertaintyWatch | None = None,
    restart_path: str | os.PathLike | None = None,
    restart_every: int = 100,
    resume: bool = False,
) -> MDResult:
    """Run NVT (Langevin), NVE (velocity Verlet) or NPT MD and measure its stability.

    Velocities are drawn from a Maxwell–Boltzmann distribution at ``temperature_K`` with a
    generator seeded by ``seed`` and the centre-of-mass momentum is removed; the Langevin
    thermostat draws from the same generator, so a run is reproducible. With
    ``restart_path`` the run's state is written there every ``restart_every`` steps and after
    the last (``equiforce.md.restart``); ``resume`` continues the run of that file exactly
    (the same steps, samples and trajectory frames as a run never stopped) up to ``n_steps``
    in all.

    Args:
        atoms: starting structure; not modified (the run works on a copy).
        calculator: any ASE calculator, e.g. ``EquiforceCalculator``.
        ensemble: ``"nvt"``, ``"nve"`` or ``"npt"`` (3D-periodic structures only).
        temperature_K: thermostat and initial-velocity temperature, K.
        timestep_fs: integration time step, fs.
        n_steps: number of steps.
        friction: Langevin friction, 1/fs (NVT only).
        trajectory_path: ``.traj`` or ``.xyz``/``.extxyz`` file for every ``log_interval``-th
            frame, or None.
        log_interval: sampling and trajectory interval, steps (at most ``n_steps``).
        seed: seeds velocities and thermostat noise.
        progress: show a tqdm progress bar.
        npt: pressure coupling of an NPT run (None: ``NPTSettings()``, MTK isotropic at 0 GPa);
            only with ``ensemble="npt"``.
        watch: an ``equiforce.md.uncertainty.UncertaintyWatch`` checking every step's committee
            force spread (the calculator must be a ``CommitteeCalculator``); the run ends early
            when it says so, and ``n_steps`` of the result counts the steps taken.
        restart_path: the run's restart file (``.npz``), or None (none written).
        restart_every: steps between two restart files, >= 1.
        resume: continue the run of ``restart_path``: ``atoms`` must be its starting
            structure's atoms (the state comes from the file) and the other arguments its
            settings (a differing one is refused by name); ``n_steps`` may exceed the run's
            first length (the run is extended).

    Returns:
        ``MDResult`` with the sampled energies, temperature (NPT: volume and pressure) and
        stability figures.
    """
    from tqdm.auto import tqdm

    _check_md_arguments(ensemble, n_steps, log_interval, friction)
    if npt is not None and ensemble != "npt":
        raise ValueError(f"NPT settings given for a {ensemble.upper()} run; use ensemble='npt'")
    if ensemble == "npt":
        npt = npt or NPTSettings()
        if not atoms.pbc.all():
            raise ValueError(f"NPT needs a cell periodic in 3D; this structure has pbc={atoms.pbc}")
    if restart_every < 1:
        raise ValueError(f"restart_every must be >= 1, got {restart_every}")
    settings = {
        "ensemble": ensemble,
        "temperature_K": temperature_K,
        "timestep_fs": timestep_fs,
        "friction_per_fs": friction if ensemble == "nvt" else None,
        "log_interval": log_interval,
        "seed": seed,
        "npt": None if npt is None else dataclasses.asdict(npt),
        "atomic_numbers_sha256": hashlib.sha256(atoms.numbers.astype(np.int64)).hexdigest(),
        "uncertainty_watch": None if watch is None else watch.settings(),
    }
    restart = _restart_to_resume(restart_path, resume, settings, n_steps)
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if restart is None:
        _thermalise(atoms, temperature_K, rng)
    else:
        restart.restore_atoms(atoms)
    dynamics = _integrator(atoms, ensemble, temperature_K, timestep_fs, friction, rng, npt)
    recorder = _Recorder(atoms, lambda: dynamics.nsteps * timestep_fs, track_cell=npt is not None)
    wall_before = _restored(restart, dynamics, rng, recorder, watch)
    path = None if trajectory_path is None else Path(trajectory_path)
    start = time.perf_counter()
    with (
        _trajectory_writer(path, atoms, restart) as frames,
        tqdm(
            total=n_steps,
            initial=dynamics.nsteps,
            disable=not progress,
            desc=f"{ensemble.upper()} MD",
            unit="step",
        ) as bar,
    ):

        def save() -> None:
            wall = wall_before + time.perf_counter() - start
            size = frames.flushed_size()
            n_frames = frames.n_frames
            args = (atoms, dynamics, rng, recorder, settings, n_frames, size, wall, watch)
            save_restart(restart_path, *args)

        for observer in (
            recorder.sample,
            frames.write,
            lambda: bar.update(dynamics.nsteps - bar.n),
        ):
            dynamics.attach(observer, interval=log_interval)
        if watch is not None:
            clock = recorder.clock_fs
            dynamics.attach(lambda: watch.check(atoms, dynamics.nsteps, clock()), interval=1)
        if restart_path is not None:
            dynamics.attach(save, interval=restart_every)  # last: after the samples and frames
        for _ in dynamics.irun(n_steps - dynamics.nsteps):
            if watch is not None and watch.should_stop:
                break
        if restart_path is not None:
            save()
    wall_time = wall_before + time.perf_counter() - start
    sampled = (ensemble, timestep_fs, temperature_K, npt)
    return _result(recorder, dynamics, sampled, path, wall_time, watch)


def _restored(
    restart: Restart | None, dynamics, rng, recorder: _Recorder, watch: UncertaintyWatch | None
) -> float:
    """Put a resumed run's state back (a new run: start the watch's file); the wall time
    the run had taken, s."""
    if restart is None:
        if watch is not None:
            watch.begin()
        return 0.0
    restart.restore(dynamics, rng, recorder, watch)
    if watch is not None and watch.should_stop:
        raise ValueError(
            f"{restart.path}: the uncertainty watch stopped this run (flagged steps "
            f"{[f.step for f in watch.flagged]}): there is nothing to resume"
        )
    return restart.wall_time_s


def _result(
    recorder: _Recorder,
    dynamics,
    sampled: tuple[str, float, float, NPTSettings | None],
    path: Path | None,
    wall_time_s: float,
    watch: UncertaintyWatch | None,
) -> MDResult:
    """The ``MDResult`` of a finished run (``sampled``: its ensemble, time step in fs,
    temperature in K and NPT coupling)."""
    ensemble, timestep_fs, temperature_K, npt = sampled
    atoms = recorder.atoms
    time_fs, potential, kinetic, temperature = recorder.arrays()
    volume, pressure = recorder.cell_arrays()
    drifting = ensemble == "nve" and len(time_fs) > 1  # a watch may stop a run at step 0
    drift = energy_drift(time_fs, potential + kinetic, len(atoms)) if drifting else None
    return MDResult(
        ensemble=ensemble,
        n_atoms=len(atoms),
        n_steps=dynamics.nsteps,
        timestep_fs=timestep_fs,
        temperature_target_K=temperature_K,
        time_fs=time_fs,
        potential_energy=potential,
        kinetic_energy=kinetic,
        temperature_K=temperature,
        energy_drift=drift,
        bonds=recorder.bonds.result(),
        trajectory_path=path,
        wall_time_s=wall_time_s,
        final_atoms=atoms,
        volume_A3=volume,
        pressure_GPa=pressure,
        npt=npt,
        uncertainty=None if watch is None else watch.summary(),
    )
