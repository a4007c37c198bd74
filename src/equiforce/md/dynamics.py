"""Molecular dynamics through ASE, with stability figures: energy drift, bond lengths, temperature.

``run_md`` runs Langevin NVT, velocity-Verlet NVE or NPT from Maxwell–Boltzmann velocities
(seeded), writes the trajectory and returns an ``MDResult``. NPT (3D-periodic cells) uses ASE's
Martyna–Tobias–Klein integrators with Nosé–Hoover chains (``IsotropicMTKNPT``; ``MTKNPT``
anisotropic: every cell component fluctuates) or, as the simple option, Berendsen coupling
(``NPTBerendsen``; ``Inhomogeneous_NPTBerendsen`` anisotropic). The figures are sampled every
``log_interval`` steps, step 0 included:

* energy drift (NVE): slope of a least-squares line through total energy per atom vs time,
  in meV/atom/ps;
* bond-length deviation: over the pairs bonded in the starting structure (distance below
  ``bond_scale`` x the sum of covalent radii), the largest ``|d(t) - d(0)|`` in Å; a bond
  counts as broken when it stretches beyond ``break_scale`` x the sum of covalent radii;
* temperature trace with its mean and standard deviation;
* NPT: volume (Å^3) and pressure (GPa, virial + ideal-gas part) traces with their means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from equiforce.md.restart import Restart, keep_frames, load_restart, save_restart

if TYPE_CHECKING:
    from equiforce.md.uncertainty import UncertaintySummary, UncertaintyWatch

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


@dataclass(frozen=True)
class BondDeviation:
    """How far the bonds of the starting structure moved along a trajectory.

    Attributes:
        n_bonds: bonded pairs in the first frame (each pair, periodic image included, once).
        max_deviation: largest ``|d(t) - d(0)|`` over bonds and frames, Å (0 without bonds).
        n_broken: bonds that exceeded the break length in at least one frame.
    """

    n_bonds: int
    max_deviation: float
    n_broken: int

    @property
    def broken(self) -> bool:
        """Whether any bond broke."""
        return self.n_broken > 0


class BondMonitor:
    """Follows the bonds of a reference structure through later frames.

    Bonds keep the lattice image they had in the reference frame, so frames must carry
    unwrapped positions (as ASE's integrators produce them).

    Args:
        reference: the starting structure.
        bond_scale: pairs closer than ``bond_scale * (r_cov_i + r_cov_j)`` are bonded.
        break_scale: a bond longer than ``break_scale * (r_cov_i + r_cov_j)`` is broken.
    """

    def __init__(self, reference: Atoms, bond_scale: float = 1.2, break_scale: float = 1.5):
        from ase.data import covalent_radii
        from ase.neighborlist import neighbor_list

        radii = covalent_radii[reference.numbers]
        i, j, shift = neighbor_list("ijS", reference, list(bond_scale * radii))
        # i-j and j-i (image -S) are one bond; an atom bonded to its own image S also has -S.
        leading_shift = shift[np.arange(len(shift)), np.argmax(shift != 0, axis=1)]
        keep = (i < j) | ((i == j) & (leading_shift > 0))
        self._i, self._j, self._shift = i[keep], j[keep], shift[keep].astype(np.float64)
        self._break_length = break_scale * (radii[self._i] + radii[self._j])
        self._d0 = self._lengths(reference)
        self._max_deviation = np.zeros(len(self._i))
        self._broken = np.zeros(len(self._i), dtype=bool)

    def _lengths(self, atoms: Atoms) -> np.ndarray:
        pos = atoms.positions
        vec = pos[self._j] - pos[self._i] + self._shift @ atoms.cell.array
        return np.linalg.norm(vec, axis=1)

    def update(self, atoms: Atoms) -> None:
        """Account for one frame (same atoms, same order as the reference)."""
        lengths = self._lengths(atoms)
        np.maximum(self._max_deviation, np.abs(lengths - self._d0), out=self._max_deviation)
        self._broken |= lengths > self._break_length

    def result(self) -> BondDeviation:
        """The deviation over all frames seen so far."""
        return BondDeviation(
            n_bonds=len(self._i),
            max_deviation=float(self._max_deviation.max(initial=0.0)),
            n_broken=int(self._broken.sum()),
        )


def bond_length_deviation(
    frames: Iterable[Atoms], bond_scale: float = 1.2, break_scale: float = 1.5
) -> BondDeviation:
    """Bond-length deviation of a trajectory relative to its first frame (see ``BondMonitor``)."""
    iterator = iter(frames)
    try:
        monitor = BondMonitor(next(iterator), bond_scale, break_scale)
    except StopIteration:
        raise ValueError("bond_length_deviation needs at least one frame") from None
    for atoms in iterator:
        monitor.update(atoms)
    return monitor.result()


def energy_drift(time_fs: np.ndarray, total_energy: np.ndarray, n_atoms: int) -> float:
    """Slope of the least-squares line through total energy per atom vs time.

    Args:
        time_fs: (n_samples,) simulation times, fs.
        total_energy: (n_samples,) potential + kinetic energy, eV.
        n_atoms: atoms in the system.

    Returns:
        Drift in meV/atom/ps.
    """
    if len(time_fs) < 2:
        raise ValueError("energy_drift needs at least two samples")
    time_ps = np.asarray(time_fs, dtype=np.float64) / 1000.0
    energy_mev = 1000.0 * np.asarray(total_energy, dtype=np.float64) / n_atoms
    slope, _ = np.polyfit(time_ps, energy_mev, 1)
    return float(slope)


@dataclass(frozen=True)
class MDResult:
    """Samples and stability figures of one MD run.

    Attributes:
        ensemble: ``"nvt"`` or ``"nve"``.
        n_atoms: atoms in the system.
        n_steps: integration steps taken.
        timestep_fs: time step, fs.
        temperature_target_K: thermostat (NVT) or initial-velocity (NVE) temperature, K.
        time_fs: (n_samples,) sample times, fs.
        potential_energy: (n_samples,) eV.
        kinetic_energy: (n_samples,) eV.
        temperature_K: (n_samples,) instantaneous temperature, K.
        energy_drift: total-energy drift, meV/atom/ps (NVE only, else None).
        bonds: bond-length deviation over the samples.
        trajectory_path: where the trajectory was written, or None.
        wall_time_s: wall-clock time of the integration, s.
        final_atoms: the structure after the last step.
        volume_A3: (n_samples,) cell volume, Å^3 (NPT only, else None).
        pressure_GPa: (n_samples,) instantaneous pressure including the ideal-gas part, GPa
            (NPT only, else None).
        npt: the pressure coupling (NPT only, else None).
        uncertainty: what the run's ``UncertaintyWatch`` saw (committee runs), or None.
    """

    ensemble: str
    n_atoms: int
    n_steps: int
    timestep_fs: float
    temperature_target_K: float
    time_fs: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    temperature_K: np.ndarray
    energy_drift: float | None
    bonds: BondDeviation
    trajectory_path: Path | None
    wall_time_s: float
    final_atoms: Atoms
    volume_A3: np.ndarray | None = None
    pressure_GPa: np.ndarray | None = None
    npt: NPTSettings | None = None
    uncertainty: UncertaintySummary | None = None

    @property
    def total_energy(self) -> np.ndarray:
        """(n_samples,) potential + kinetic energy, eV."""
        return self.potential_energy + self.kinetic_energy

    @property
    def temperature_mean(self) -> float:
        """Mean of the temperature samples, K."""
        return float(np.mean(self.temperature_K))

    @property
    def temperature_std(self) -> float:
        """Standard deviation of the temperature samples, K."""
        return float(np.std(self.temperature_K))

    def summary(self) -> dict:
        """JSON-friendly figures; per-sample arrays: time, temperature (NPT: volume, pressure)."""
        figures = {
            "ensemble": self.ensemble,
            "n_atoms": self.n_atoms,
            "n_steps": self.n_steps,
            "timestep_fs": self.timestep_fs,
            "simulated_time_ps": self.n_steps * self.timestep_fs / 1000.0,
            "temperature_target_K": self.temperature_target_K,
            "temperature_mean_K": self.temperature_mean,
            "temperature_std_K": self.temperature_std,
            "energy_drift_meV_per_atom_per_ps": self.energy_drift,
            "n_bonds": self.bonds.n_bonds,
            "max_bond_deviation_A": self.bonds.max_deviation,
            "n_broken_bonds": self.bonds.n_broken,
            "bond_broken": self.bonds.broken,
            "steps_per_second": self.n_steps / self.wall_time_s if self.wall_time_s > 0 else None,
            "trajectory": None if self.trajectory_path is None else str(self.trajectory_path),
            "time_fs": self.time_fs.tolist(),
            "temperature_K": self.temperature_K.tolist(),
            "uncertainty": None if self.uncertainty is None else self.uncertainty.to_dict(),
        }
        if self.npt is not None:
            figures.update(
                barostat=self.npt.barostat,
                anisotropic=self.npt.anisotropic,
                pressure_target_GPa=self.npt.pressure_GPa,
                pressure_mean_GPa=float(np.mean(self.pressure_GPa)),
                pressure_std_GPa=float(np.std(self.pressure_GPa)),
                volume_mean_A3=float(np.mean(self.volume_A3)),
                volume_A3=self.volume_A3.tolist(),
                pressure_GPa=self.pressure_GPa.tolist(),
            )
        return figures


def format_md_summary(result: MDResult) -> str:
    """A short two-column table of the run's stability figures."""
    drift = (
        f"n/a ({result.ensemble.upper()})"
        if result.energy_drift is None
        else f"{result.energy_drift:.4g}"
    )
    rows = [
        ("ensemble", result.ensemble.upper()),
        ("atoms", str(result.n_atoms)),
        ("steps x timestep", f"{result.n_steps} x {result.timestep_fs:g} fs"),
        ("temperature (K)", f"{result.temperature_mean:.1f} +- {result.temperature_std:.1f}"),
        ("energy drift (meV/atom/ps)", drift),
        ("max bond deviation (Å)", f"{result.bonds.max_deviation:.4f}"),
        ("broken bonds", f"{result.bonds.n_broken} of {result.bonds.n_bonds}"),
        ("wall time (s)", f"{result.wall_time_s:.2f}"),
    ]
    if result.uncertainty is not None:
        watch = result.uncertainty
        stop = f", stopped at step {watch.first_flagged_step}" if watch.stopped_early else ""
        rows.append(("max force spread (eV/Å)", f"{watch.max_force_uncertainty:.4f}"))
        rows.append(("frames over threshold", f"{watch.n_flagged} (> {watch.threshold:g}{stop})"))
    if result.npt is not None:
        kind = f"{result.npt.barostat}, {'an' if result.npt.anisotropic else ''}isotropic"
        pressure = f"{np.mean(result.pressure_GPa):.3f} +- {np.std(result.pressure_GPa):.3f}"
        rows[1:1] = [
            ("barostat", kind),
            ("pressure (GPa)", f"{pressure} (target {result.npt.pressure_GPa:g})"),
            ("volume (Å^3)", f"{result.volume_A3[0]:.2f} -> mean {np.mean(result.volume_A3):.2f}"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def plot_md(result: MDResult, path: str | os.PathLike) -> Path:
    """Write a PNG with energy change per atom and temperature (NPT: volume, pressure) vs time.

    Args:
        result: output of ``run_md``.
        path: PNG file to write (parent folders are created).

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    time_ps = result.time_fs / 1000.0
    origin = result.total_energy[0]
    npt = result.npt is not None
    fig = Figure(figsize=(6.5, 9.5 if npt else 5.5), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4 if npt else 2, 1, sharex=True)
    top, bottom = axes[0], axes[1]
    for values, label in ((result.total_energy, "total"), (result.potential_energy, "potential")):
        top.plot(time_ps, 1000.0 * (values - origin) / result.n_atoms, label=label)
    top.set_ylabel("E - E_total(0) (meV/atom)")
    drift = "" if result.energy_drift is None else f", drift {result.energy_drift:.3g} meV/atom/ps"
    top.set_title(f"{result.ensemble.upper()} MD{drift}")
    top.legend()
    bottom.plot(time_ps, result.temperature_K, label="instantaneous")
    bottom.axhline(result.temperature_target_K, color="black", linewidth=0.8, label="target")
    bottom.set_ylabel("temperature (K)")
    bottom.legend()
    if npt:
        axes[2].plot(time_ps, result.volume_A3)
        axes[2].set_ylabel("volume (Å$^3$)")
        axes[3].plot(time_ps, result.pressure_GPa, label="instantaneous")
        axes[3].axhline(result.npt.pressure_GPa, color="black", linewidth=0.8, label="target")
        axes[3].set_ylabel("pressure (GPa)")
        axes[3].legend()
    axes[-1].set_xlabel("time (ps)")
    fig.tight_layout()
    fig.savefig(path)
    return path


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
    wall_before = 0.0
    if restart is not None:
        restart.restore(dynamics, rng, recorder, watch)
        wall_before = restart.wall_time_s
        if watch is not None and watch.should_stop:
            raise ValueError(
                f"{restart_path}: the uncertainty watch stopped this run (flagged steps "
                f"{[f.step for f in watch.flagged]}): there is nothing to resume"
            )
    elif watch is not None:
        watch.begin()
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
        wall_time_s=wall_time,
        final_atoms=atoms,
        volume_A3=volume,
        pressure_GPa=pressure,
        npt=npt,
        uncertainty=None if watch is None else watch.summary(),
    )
