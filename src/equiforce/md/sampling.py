"""What every MD run of ``equiforce.md`` shares: starting velocities, argument checks, the
trajectory writer, the sampler of energies/temperature/bonds and the ``MDResult`` it makes.

``run_md`` (ASE, one structure) and ``run_batched_md`` (TorchSim, many at once) both sample
through ``Recorder`` and write frames through ``trajectory_writer``, so their samples,
trajectories and results have one format.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
from ase import Atoms, units

from equiforce.md.report import MDResult
from equiforce.md.restart import keep_frames
from equiforce.md.stability import BondMonitor, energy_drift

if TYPE_CHECKING:
    from equiforce.md.dynamics import NPTSettings
    from equiforce.md.uncertainty import UncertaintyWatch

# NVT thermostats: Langevin (stochastic, friction), the Nosé–Hoover chain (deterministic) and
# Bussi's stochastic velocity rescaling (both with a damping time)
THERMOSTATS = ("langevin", "nose-hoover", "bussi")


class _LinearRamp:
    """A target going linearly from the run's start value to the ramp's end (``final``) over
    ``steps`` steps, then held there."""

    final: float
    steps: int

    def target(self, start: float, step: int) -> float:
        """The target of the step that ends at ``step`` (1 the first)."""
        return start + (self.final - start) * min(step, self.steps) / self.steps

    def targets(self, start: float, steps: np.ndarray) -> np.ndarray:
        """The targets at (fractional) ``steps`` (n,)."""
        fraction = np.clip(np.asarray(steps, dtype=np.float64) / self.steps, 0.0, 1.0)
        return start + (self.final - start) * fraction


@dataclass(frozen=True)
class TemperatureRamp(_LinearRamp):
    """A thermostat's target going linearly from the start temperature to ``final_K`` over
    ``steps`` steps (a melt-quench, a heating), then held there.

    Attributes:
        final_K: the target at the end of the ramp, K.
        steps: the ramp's length (the run's ``n_steps``).
    """

    final_K: float
    steps: int

    @property
    def final(self) -> float:
        """The end, K."""
        return self.final_K


@dataclass(frozen=True)
class PressureRamp(_LinearRamp):
    """An NPT barostat's target going linearly from the start pressure to ``final_GPa`` over
    ``steps`` steps (a compression, a decompression), then held there.

    Attributes:
        final_GPa: the target at the end of the ramp, GPa.
        steps: the ramp's length (the run's ``n_steps``).
    """

    final_GPa: float
    steps: int

    @property
    def final(self) -> float:
        """The end, GPa."""
        return self.final_GPa


class RunConditions(NamedTuple):
    """What an ``MDResult`` records of a run's setting: its ensemble, time step (fs),
    (start) temperature (K), NPT coupling (or None), temperature ramp (or None), NVT
    thermostat (``THERMOSTATS``; None outside NVT) and pressure ramp (or None)."""

    ensemble: str
    timestep_fs: float
    temperature_K: float
    npt: NPTSettings | None = None
    ramp: TemperatureRamp | None = None
    thermostat: str | None = None
    pressure_ramp: PressureRamp | None = None


class Frames:
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
def trajectory_writer(
    path: Path | None, atoms: Atoms, resume_at: tuple[int, int | None] | None = None
):
    """Yield the ``Frames`` of ``path`` (.traj or .xyz/.extxyz) writing ``atoms``; with
    ``resume_at`` (frames, extended XYZ bytes or None, as a restart file counted them), the
    file cut back to those frames (``keep_frames``) and appended to."""
    if path is None:
        yield Frames(lambda: None)
        return
    if path.suffix not in (".traj", ".xyz", ".extxyz"):
        raise ValueError(f"trajectory {path}: use a .traj, .xyz or .extxyz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, n_frames = "w", 0
    if resume_at is not None:
        keep_frames(path, *resume_at)
        mode, n_frames = "a", resume_at[0]
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(str(path), mode, atoms) as trajectory:
            yield Frames(trajectory.write, None, n_frames)
    else:
        from ase.io import write

        with open(path, mode) as handle:
            yield Frames(lambda: write(handle, atoms, format="extxyz"), handle, n_frames)


def barostat_pressure_GPa(atoms: Atoms, cell_mask: Sequence[bool] | None = None) -> float:
    """The instantaneous pressure a barostat drives, with the ideal-gas part, GPa: the
    hydrostatic one, or with ``cell_mask`` the mean over the free cell vectors of the pressure
    along each, ``(h P h^-1)_aa`` (the in-plane pressure of a slab, whose vacuum has none)."""
    pressure = -atoms.get_stress(voigt=False, include_ideal_gas=True)
    if cell_mask is None:
        return float(np.trace(pressure)) / 3 / units.GPa
    cell = atoms.cell.array
    along = np.diag(cell @ pressure @ np.linalg.inv(cell))
    return float(along[np.asarray(cell_mask, dtype=bool)].mean()) / units.GPa


class Recorder:
    """Samples time, energies, temperature (with ``npt``: volume and the pressure its barostat
    drives, ``barostat_pressure_GPa``); feeds bonds."""

    def __init__(self, atoms: Atoms, clock_fs: Callable[[], float], npt: NPTSettings | None = None):
        self.atoms = atoms
        self.clock_fs = clock_fs
        self.bonds = BondMonitor(atoms)
        self.rows: list[tuple[float, float, float, float]] = []
        self.cell_rows: list[tuple[float, float]] | None = None if npt is None else []
        self.cell_mask = None if npt is None else npt.cell_mask

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
            pressure = barostat_pressure_GPa(self.atoms, self.cell_mask)
            self.cell_rows.append((self.atoms.get_volume(), pressure))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """time_fs, potential (eV), kinetic (eV), temperature (K), each (n_samples,)."""
        return tuple(np.array(column, dtype=np.float64) for column in zip(*self.rows, strict=True))

    def cell_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Volume (Å^3) and pressure (GPa), each (n_samples,), or None without ``track_cell``."""
        if self.cell_rows is None:
            return None, None
        volume, pressure = zip(*self.cell_rows, strict=True)
        return np.array(volume, dtype=np.float64), np.array(pressure, dtype=np.float64)


def thermalise(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at ``temperature_K`` from ``rng``, centre of mass at rest
    (the remaining momenta rescaled to the temperature drawn; a single atom is left at rest:
    ASE's rescaling divides by its zero kinetic energy, giving NaN momenta)."""
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ase < 3.29 only has the (since deprecated) older name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms, preserve_temperature=len(atoms) > 1)


def check_md_arguments(
    ensemble: str,
    n_steps: int,
    log_interval: int,
    friction: float,
    thermostat: str = "langevin",
    thermostat_time_fs: float = 100.0,
) -> None:
    """Raise naming the first bad MD argument: the ensemble, the step counts, the NVT
    thermostat (``THERMOSTATS``; another than Langevin only in NVT) and its Langevin
    friction (1/fs) or the others' damping time (fs)."""
    if ensemble not in ("nvt", "nve", "npt"):
        raise ValueError(f"ensemble must be 'nvt', 'nve' or 'npt', got {ensemble!r}")
    if n_steps < 1 or log_interval < 1:
        raise ValueError(f"n_steps and log_interval must be >= 1, got {n_steps}, {log_interval}")
    if log_interval > n_steps:
        raise ValueError(f"log_interval ({log_interval}) must not exceed n_steps ({n_steps})")
    if thermostat not in THERMOSTATS:
        raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {thermostat!r}")
    if thermostat != "langevin" and ensemble != "nvt":
        raise ValueError(f"the {thermostat} thermostat is for NVT, not {ensemble.upper()}")
    if ensemble == "nvt" and thermostat == "langevin" and friction <= 0:
        raise ValueError(f"Langevin friction must be positive, got {friction} per fs")
    if ensemble == "nvt" and thermostat != "langevin" and not thermostat_time_fs > 0:
        raise ValueError(f"thermostat_time_fs must be positive, got {thermostat_time_fs}")


def check_final_temperature(ensemble: str, final_temperature_K: float | None) -> None:
    """Raise unless a temperature ramp's end (K; None: no ramp) is positive, in NVT or NPT."""
    if final_temperature_K is None:
        return
    if ensemble == "nve":
        raise ValueError("a temperature ramp is for NVT or NPT, not NVE (no thermostat)")
    if not final_temperature_K > 0:
        raise ValueError(f"the final temperature must be > 0 K, got {final_temperature_K}")


def check_final_pressure(ensemble: str, final_pressure_GPa: float | None) -> None:
    """Raise unless a pressure ramp's end (GPa; None: no ramp) is finite, in NPT."""
    if final_pressure_GPa is None:
        return
    if ensemble != "npt":
        raise ValueError(f"a pressure ramp is for NPT, not {ensemble.upper()}")
    if not np.isfinite(final_pressure_GPa):
        raise ValueError(f"the final pressure must be finite, got {final_pressure_GPa}")


def nvt_settings(
    ensemble: str, friction: float, thermostat: str, thermostat_time_fs: float
) -> dict[str, float | None]:
    """The NVT thermostat's run settings (a resumed run must give the same): Langevin's
    ``friction_per_fs``, or another thermostat's name ``nvt_thermostat`` and damping time
    ``thermostat_time_fs``; None where they do not apply (so the files of Langevin runs from
    before the other thermostats existed still match)."""
    langevin = ensemble == "nvt" and thermostat == "langevin"
    other = ensemble == "nvt" and thermostat != "langevin"
    return {
        "friction_per_fs": friction if langevin else None,
        "nvt_thermostat": thermostat if other else None,
        "thermostat_time_fs": thermostat_time_fs if other else None,
    }


def md_result(
    recorder: Recorder,
    n_steps: int,
    sampled: RunConditions,
    path: Path | None,
    wall_time_s: float,
    watch: UncertaintyWatch | None,
) -> MDResult:
    """The ``MDResult`` of a finished run (``sampled``: its setting)."""
    ensemble, timestep_fs, temperature_K, npt, ramp, thermostat, pressure_ramp = sampled
    atoms = recorder.atoms
    time_fs, potential, kinetic, temperature = recorder.arrays()
    volume, pressure = recorder.cell_arrays()
    drifting = ensemble == "nve" and len(time_fs) > 1  # a watch may stop a run at step 0
    drift = energy_drift(time_fs, potential + kinetic, len(atoms)) if drifting else None
    return MDResult(
        ensemble=ensemble,
        n_atoms=len(atoms),
        n_steps=n_steps,
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
        temperature_ramp=ramp,
        thermostat=thermostat,
        pressure_ramp=pressure_ramp,
    )
