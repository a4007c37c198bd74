"""Molecular dynamics through ASE: ``run_md``, with its samples, trajectory and restarts.

``run_md`` runs NVT (Langevin, a Nosé–Hoover chain: ``equiforce.md.nose_hoover``, or Bussi's
stochastic velocity rescaling), NVE (velocity Verlet) or NPT from Maxwell–Boltzmann velocities
(seeded), writes the trajectory and returns an ``MDResult`` (``equiforce.md.report``). NPT
(3D-periodic cells) uses ASE's Martyna–Tobias–Klein integrators with Nosé–Hoover chains
(``IsotropicMTKNPT``; ``MTKNPT`` anisotropic: every cell component fluctuates; their targets
made movable in ``equiforce.md.nose_hoover``), Berendsen coupling (``NPTBerendsen``;
``Inhomogeneous_NPTBerendsen`` anisotropic) or stochastic cell rescaling
(``equiforce.md.crescale``: as robust as Berendsen's, and samples the ensemble). Every
``log_interval`` steps, step 0 included, it samples the energies and the temperature (NPT:
volume, and pressure with its ideal-gas part) and follows the bonds
(``equiforce.md.stability``) through ``equiforce.md.sampling``, which batched MD shares; with
a restart file it can stop and go on exactly (``equiforce.md.restart``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.md import MolecularDynamics

from equiforce.md.report import MDResult
from equiforce.md.restart import Restart, restart_to_resume, save_restart
from equiforce.md.sampling import (
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
    from equiforce.md.uncertainty import UncertaintyWatch

Ensemble = Literal["nvt", "nve", "npt"]
Barostat = Literal["mtk", "berendsen", "c-rescale"]
Thermostat = Literal["langevin", "nose-hoover", "bussi"]
BAROSTATS = ("mtk", "berendsen", "c-rescale")


@dataclass(frozen=True)
class NPTSettings:
    """Pressure coupling of an NPT run.

    Attributes:
        pressure_GPa: target (external, hydrostatic) pressure, GPa.
        barostat: ``"mtk"`` (Martyna–Tobias–Klein with Nosé–Hoover chains: samples the NPT
            ensemble), ``"berendsen"`` (first-order relaxation of pressure and temperature:
            robust for equilibration, does not sample the ensemble's fluctuations) or
            ``"c-rescale"`` (stochastic cell rescaling with Bussi's thermostat: first-order
            and robust as Berendsen's, and samples the ensemble; isotropic, anisotropic or
            masked; ``equiforce.md.crescale``).
        anisotropic: let every cell component fluctuate (MTK: ``MTKNPT``; Berendsen: each
            axis scaled by its own pressure; stochastic cell rescaling: Del Tatto et al.'s
            anisotropic form) instead of a uniform scaling of the cell.
        barostat_time_fs: barostat damping (MTK ``pdamp``) or relaxation (Berendsen's and
            stochastic cell rescaling's ``taup``) time, fs; ~1000 fs is safe for metals,
            ~100 timesteps at least.
        thermostat_time_fs: thermostat damping (MTK ``tdamp``) or relaxation (Berendsen's and
            Bussi's ``taut``) time, fs.
        compressibility_per_GPa: Berendsen's and stochastic cell rescaling's coupling
            compressibility, 1/GPa (the material's own, order 0.01 for metals; it only scales
            how fast the volume relaxes).
        cell_mask: with ``anisotropic``, the cell vectors (a, b, c) whose lengths may change
            (the others, and the angles, held): ``(True, True, False)`` for a slab or a 2D
            material in its plane (LAMMPS's ``x ... y ... couple none`` without ``z``). MTK:
            ASE's ``MaskedMTKNPT`` (each free axis its own momentum, along its starting
            direction); Berendsen: ``Inhomogeneous_NPTBerendsen``'s ``mask``; stochastic cell
            rescaling: each free vector's length along its direction (``crescale``). None:
            every component (MTK, stochastic cell rescaling) or axis (Berendsen) moves.
        couple: stochastic cell rescaling with ``cell_mask``: the free cell vectors scaled
            by one factor, e.g. ``"ab"`` (LAMMPS's ``couple xy``: a hexagonal 2D material's
            plane keeps its shape; with c free too, GROMACS's semi-isotropic coupling). None:
            each free vector by its own.
    """

    pressure_GPa: float = 0.0
    barostat: Barostat = "mtk"
    anisotropic: bool = False
    barostat_time_fs: float = 1000.0
    thermostat_time_fs: float = 100.0
    compressibility_per_GPa: float = 0.01
    cell_mask: tuple[bool, bool, bool] | None = None
    couple: str | None = None

    def setting(self) -> dict:
        """The fields as a run's restart setting (``cell_mask`` and ``couple`` left out where
        None, so the files of runs from before they existed still match)."""
        fields = dataclasses.asdict(self)
        for name in ("cell_mask", "couple"):
            if fields[name] is None:
                del fields[name]
        if self.cell_mask is not None:
            fields["cell_mask"] = [bool(axis) for axis in fields["cell_mask"]]
        return fields

    def _check_couple(self) -> None:
        """Raise unless ``couple`` names two or three free cell vectors of a c-rescale run."""
        names = self.couple if isinstance(self.couple, str) else ""
        free = "".join(v for v, on in zip("abc", self.cell_mask or (), strict=False) if on)
        if (
            self.barostat != "c-rescale"
            or len(names) < 2
            or len(set(names)) != len(names)
            or not set(names) <= set(free)
        ):
            raise ValueError(
                f"couple {self.couple!r}: two or three of the free cell vectors "
                f"({free or 'none: give cell_mask'}) scaled together, with the c-rescale barostat"
            )

    def ase_arguments(self) -> dict[str, float]:
        """The barostat's keyword arguments of ASE's integrator, in ASE units: MTK's
        ``pressure_au``, ``tdamp``, ``pdamp``; Berendsen's and stochastic cell rescaling's
        ``pressure_au``, ``taut``, ``taup``, ``compressibility_au`` (``run_md``'s and batched
        MD's one conversion)."""
        times = (self.thermostat_time_fs * units.fs, self.barostat_time_fs * units.fs)
        arguments = {"pressure_au": self.pressure_GPa * units.GPa}
        if self.barostat == "mtk":
            return {**arguments, "tdamp": times[0], "pdamp": times[1]}
        compressibility = self.compressibility_per_GPa / units.GPa
        return {
            **arguments,
            "taut": times[0],
            "taup": times[1],
            "compressibility_au": compressibility,
        }

    def __post_init__(self):
        if self.barostat not in BAROSTATS:
            raise ValueError(f"barostat must be one of {BAROSTATS}, got {self.barostat!r}")
        if self.cell_mask is not None:
            mask = tuple(bool(axis) for axis in self.cell_mask)
            if len(mask) != 3 or not any(mask) or not self.anisotropic:
                raise ValueError(
                    f"cell_mask {self.cell_mask}: three flags (a, b, c), one at least True, "
                    "with anisotropic=True (each free axis its own pressure)"
                )
            object.__setattr__(self, "cell_mask", mask)
        if self.couple is not None:
            self._check_couple()
        for name in ("barostat_time_fs", "thermostat_time_fs", "compressibility_per_GPa"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NPT {name} must be positive, got {getattr(self, name)}")


def _barostat(
    atoms: Atoms, temperature_K: float, timestep_fs: float, npt: NPTSettings, rng
) -> MolecularDynamics:
    """The NPT integrator for ``npt`` (MTK with Nosé–Hoover chains, Berendsen, or stochastic
    cell rescaling drawing from ``rng``)."""
    if npt.barostat == "c-rescale":
        from equiforce.md.crescale import StochasticCellRescalingNPT

        dt = timestep_fs * units.fs
        arguments = npt.ase_arguments()
        return StochasticCellRescalingNPT(
            atoms,
            dt,
            temperature_K,
            rng=rng,
            anisotropic=npt.anisotropic,
            mask=npt.cell_mask,
            couple=npt.couple,
            **arguments,
        )
    arguments = npt.ase_arguments()
    if npt.cell_mask is not None:  # a list: ASE 3.29's MaskedMTKNPT indexes its momenta with
        # the mask, and a tuple reads as three scalar indices (the cell then never moves)
        arguments["mask"] = list(npt.cell_mask)
    if npt.barostat == "mtk":
        from equiforce.md.nose_hoover import IsotropicMTKNPTRamp, MaskedMTKNPTRamp, MTKNPTRamp

        integrator = IsotropicMTKNPTRamp
        if npt.anisotropic:
            integrator = MTKNPTRamp if npt.cell_mask is None else MaskedMTKNPTRamp
    else:
        from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen, NPTBerendsen

        integrator = Inhomogeneous_NPTBerendsen if npt.anisotropic else NPTBerendsen
    return integrator(atoms, timestep_fs * units.fs, temperature_K=temperature_K, **arguments)


def _integrator(
    atoms: Atoms,
    ensemble: str,
    temperature_K: float,
    timestep_fs: float,
    thermostat: tuple[str, float, float],
    rng,
    npt: NPTSettings | None = None,
):
    """ASE's integrator of the run (``thermostat``: NVT's kind, Langevin friction 1/fs and
    the other thermostats' damping time fs)."""
    from ase.constraints import FixCom
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    kind, friction, damping_fs = thermostat
    if ensemble == "npt":
        return _barostat(atoms, temperature_K, timestep_fs, npt or NPTSettings(), rng)
    if ensemble == "nvt" and kind == "bussi":
        taut = damping_fs * units.fs
        return Bussi(atoms, timestep_fs * units.fs, temperature_K=temperature_K, taut=taut, rng=rng)
    if ensemble == "nvt" and kind == "nose-hoover":
        from equiforce.md.nose_hoover import FixedAtomsNoseHooverChainNVT

        return FixedAtomsNoseHooverChainNVT(
            atoms, timestep_fs * units.fs, temperature_K=temperature_K, tdamp=damping_fs * units.fs
        )
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
    thermostat: Thermostat = "langevin",
    thermostat_time_fs: float = 100.0,
    final_temperature_K: float | None = None,
    final_pressure_GPa: float | None = None,
) -> MDResult:
    """Run NVT (Langevin, Nosé–Hoover chain or Bussi), NVE (velocity Verlet) or NPT MD and
    measure its stability.

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
        thermostat: NVT's thermostat: ``"langevin"`` (``friction``; the centre of mass kept
            at rest) or ``"nose-hoover"`` (ASE's ``NoseHooverChainNVT``: deterministic,
            three links, damping ``thermostat_time_fs``; ~100 time steps; ``FixAtoms`` the
            only constraint: ``equiforce.md.nose_hoover``) or ``"bussi"`` (ASE's ``Bussi``
            stochastic velocity rescaling, Bussi, Donadio & Parrinello 2007: canonical, one
            random factor a step on all momenta; time constant ``thermostat_time_fs``).
        thermostat_time_fs: the Nosé–Hoover chain's damping or Bussi's time constant, fs.
        final_temperature_K: NVT or NPT: ramp the thermostat's target linearly from
            ``temperature_K`` (the start velocities') to this over the ``n_steps`` (a
            melt-quench or a heating; ``equiforce.md.sampling.TemperatureRamp``; the
            Nosé–Hoover chains' and MTK's masses follow: ``equiforce.md.nose_hoover``); None:
            a constant target. A ramped run cannot be extended by a resume.
        final_pressure_GPa: NPT: ramp the barostat's target linearly from
            ``npt.pressure_GPa`` to this over the ``n_steps`` (a compression, a
            decompression; ``equiforce.md.sampling.PressureRamp``), as LAMMPS's ``fix npt``
            with Pstart != Pstop; None: a constant target. Not extended by a resume either.

    Returns:
        ``MDResult`` with the sampled energies, temperature (NPT: volume and pressure) and
        stability figures.
    """
    from tqdm.auto import tqdm

    check_md_arguments(ensemble, n_steps, log_interval, friction, thermostat, thermostat_time_fs)
    if restart_every < 1:
        raise ValueError(f"restart_every must be >= 1, got {restart_every}")
    npt = _checked_npt(atoms, ensemble, npt)
    check_final_temperature(ensemble, final_temperature_K)
    ramp = None if final_temperature_K is None else TemperatureRamp(final_temperature_K, n_steps)
    check_final_pressure(ensemble, final_pressure_GPa)
    pressure_ramp = None
    if final_pressure_GPa is not None:
        pressure_ramp = PressureRamp(final_pressure_GPa, n_steps)
    settings = {
        "ensemble": ensemble,
        "temperature_K": temperature_K,
        "timestep_fs": timestep_fs,
        **nvt_settings(ensemble, friction, thermostat, thermostat_time_fs),
        "log_interval": log_interval,
        "seed": seed,
        "npt": None if npt is None else npt.setting(),
        "atomic_numbers_sha256": hashlib.sha256(atoms.numbers.astype(np.int64)).hexdigest(),
        "uncertainty_watch": None if watch is None else watch.settings(),
        "temperature_ramp": None if ramp is None else dataclasses.asdict(ramp),
        "pressure_ramp": None if pressure_ramp is None else dataclasses.asdict(pressure_ramp),
    }
    restart = restart_to_resume(restart_path, resume, settings, n_steps)
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if restart is None:
        thermalise(atoms, temperature_K, rng)
    else:
        restart.restore_atoms(atoms)
    nvt = (thermostat, friction, thermostat_time_fs)
    dynamics = _integrator(atoms, ensemble, temperature_K, timestep_fs, nvt, rng, npt)
    recorder = Recorder(atoms, lambda: dynamics.nsteps * timestep_fs, npt)
    wall_before = _restored(restart, dynamics, rng, recorder, watch)
    path = None if trajectory_path is None else Path(trajectory_path)
    resume_at = None if restart is None else (restart.n_frames, restart.trajectory_bytes)
    start = time.perf_counter()
    with (
        trajectory_writer(path, atoms, resume_at) as frames,
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

        if ramp is not None or pressure_ramp is not None:
            targets = (temperature_K, ramp, npt, pressure_ramp)
            dynamics.attach(_retarget, 1, dynamics, *targets)
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
    nvt_thermostat = thermostat if ensemble == "nvt" else None
    sampled = RunConditions(
        ensemble, timestep_fs, temperature_K, npt, ramp, nvt_thermostat, pressure_ramp
    )
    return md_result(recorder, dynamics.nsteps, sampled, path, wall_time, watch)


def _checked_npt(atoms: Atoms, ensemble: str, npt: NPTSettings | None) -> NPTSettings | None:
    """The run's NPT coupling (NPT: ``npt`` or the default; else None).

    Raises:
        ValueError: NPT settings outside NPT, or NPT of a structure not periodic in 3D.
    """
    if npt is not None and ensemble != "npt":
        raise ValueError(f"NPT settings given for a {ensemble.upper()} run; use ensemble='npt'")
    if ensemble != "npt":
        return None
    if not atoms.pbc.all():
        raise ValueError(f"NPT needs a cell periodic in 3D; this structure has pbc={atoms.pbc}")
    return npt or NPTSettings()


def _retarget(
    dynamics,
    temperature_K: float,
    ramp: TemperatureRamp | None,
    npt: NPTSettings | None,
    pressure_ramp: PressureRamp | None,
) -> None:
    """Set the integrator's targets of the coming step on their ramps (an observer: at step 0
    and after each step)."""
    step = dynamics.nsteps + 1
    if ramp is not None:
        set_thermostat_target(dynamics, ramp.target(temperature_K, step))
    if pressure_ramp is not None:
        set_barostat_target(dynamics, pressure_ramp.target(npt.pressure_GPa, step))


def set_thermostat_target(dynamics, temperature_K: float) -> None:
    """Set an integrator's target temperature (K): ASE's ``Langevin``, ``Bussi`` (its
    kinetic-energy target follows), ``NPTBerendsen``, ``equiforce.md.nose_hoover``'s chain
    and MTK integrators (their masses follow, as LAMMPS's ``fix nvt``/``fix npt`` ramps) or
    ``equiforce.md.crescale``'s."""
    from ase.md.bussi import Bussi

    if isinstance(dynamics, Bussi):
        dynamics.temp = units.kB * temperature_K
        dynamics.target_kinetic_energy = 0.5 * dynamics.temp * dynamics.ndof
    else:
        dynamics.set_temperature(temperature_K=temperature_K)


def set_barostat_target(dynamics, pressure_GPa: float) -> None:
    """Set an NPT integrator's target pressure (GPa): ASE's ``NPTBerendsen`` (its attribute:
    ASE 3.29's ``set_pressure`` hands its arguments on wrongly),
    ``equiforce.md.nose_hoover``'s MTK integrators or ``equiforce.md.crescale``'s."""
    from ase.md.nptberendsen import NPTBerendsen

    if isinstance(dynamics, NPTBerendsen):
        dynamics.pressure = pressure_GPa * units.GPa
    else:
        dynamics.set_pressure(pressure_GPa * units.GPa)


def _restored(
    restart: Restart | None, dynamics, rng, recorder: Recorder, watch: UncertaintyWatch | None
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
