"""What an MD run reports: ``MDResult`` (samples and stability figures), its printed summary
and its figure (energy and temperature; NPT: volume and pressure vs time); for a batched run
(``run_batched_md``) a table with a row per structure and one figure of them all."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from equiforce.md.stability import BondDeviation

if TYPE_CHECKING:
    from equiforce.md.dynamics import NPTSettings
    from equiforce.md.sampling import PressureRamp, TemperatureRamp
    from equiforce.md.uncertainty import UncertaintySummary


@dataclass(frozen=True)
class MDResult:
    """Samples and stability figures of one MD run.

    Attributes:
        ensemble: ``"nvt"`` or ``"nve"``.
        n_atoms: atoms in the system.
        n_steps: integration steps taken.
        timestep_fs: time step, fs.
        temperature_target_K: thermostat (NVT) or initial-velocity (NVE) temperature, K (a
            ramp's start).
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
            (NPT only, else None): hydrostatic, or with ``npt.cell_mask`` the mean pressure
            along the free cell vectors (``sampling.barostat_pressure_GPa``), what the
            barostat drives to its target.
        npt: the pressure coupling (NPT only, else None).
        uncertainty: what the run's ``UncertaintyWatch`` saw (committee runs), or None.
        temperature_ramp: the thermostat's ramp from ``temperature_target_K``
            (``equiforce.md.sampling.TemperatureRamp``), or None (a constant target).
        thermostat: NVT's thermostat (``"langevin"``, ``"nose-hoover"``, ``"bussi"``), or
            None (NVE, NPT).
        pressure_ramp: the barostat's ramp from ``npt.pressure_GPa``
            (``equiforce.md.sampling.PressureRamp``), or None (a constant target).
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
    temperature_ramp: TemperatureRamp | None = None
    thermostat: str | None = None
    pressure_ramp: PressureRamp | None = None

    def target_temperature(self, time_fs: np.ndarray) -> np.ndarray:
        """The thermostat's target at ``time_fs`` (n,), K."""
        ramp = self.temperature_ramp
        if ramp is None:
            return np.full(len(time_fs), self.temperature_target_K)
        return ramp.targets(self.temperature_target_K, np.asarray(time_fs) / self.timestep_fs)

    def target_pressure(self, time_fs: np.ndarray) -> np.ndarray:
        """The barostat's target at ``time_fs`` (n,), GPa (NPT only)."""
        start, ramp = self.npt.pressure_GPa, self.pressure_ramp
        if ramp is None:
            return np.full(len(time_fs), start)
        return ramp.targets(start, np.asarray(time_fs) / self.timestep_fs)

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
            "thermostat": self.thermostat,
            "n_atoms": self.n_atoms,
            "n_steps": self.n_steps,
            "timestep_fs": self.timestep_fs,
            "simulated_time_ps": self.n_steps * self.timestep_fs / 1000.0,
            "temperature_target_K": self.temperature_target_K,
            "temperature_final_target_K": None
            if self.temperature_ramp is None
            else self.temperature_ramp.final_K,
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
                cell_mask=None if self.npt.cell_mask is None else list(self.npt.cell_mask),
                couple=self.npt.couple,
                pressure_target_GPa=self.npt.pressure_GPa,
                pressure_final_target_GPa=None
                if self.pressure_ramp is None
                else self.pressure_ramp.final_GPa,
                pressure_mean_GPa=float(np.mean(self.pressure_GPa)),
                pressure_std_GPa=float(np.std(self.pressure_GPa)),
                volume_mean_A3=float(np.mean(self.volume_A3)),
                volume_A3=self.volume_A3.tolist(),
                pressure_GPa=self.pressure_GPa.tolist(),
            )
        return figures


def _pressure_target(result: MDResult) -> str:
    """The barostat's target, GPa: ``"1"``, or a ramp's ``"0 -> 10"``."""
    start, ramp = result.npt.pressure_GPa, result.pressure_ramp
    return f"{start:g}" if ramp is None else f"{start:g} -> {ramp.final_GPa:g}"


def _pressure_label(npt: NPTSettings) -> str:
    """The summary row of the recorded pressure: hydrostatic, or along the free vectors."""
    if npt.cell_mask is None:
        return "pressure (GPa)"
    free = " ".join(name for name, on in zip("abc", npt.cell_mask, strict=True) if on)
    return f"pressure along {free} (GPa)"


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
        if result.npt.cell_mask is not None:
            free = " ".join(v for v, on in zip("abc", result.npt.cell_mask, strict=True) if on)
            kind += f", cell vectors {free} free"
            if result.npt.couple is not None:
                kind += f" ({' '.join(result.npt.couple)} coupled)"
        pressure = f"{np.mean(result.pressure_GPa):.3f} +- {np.std(result.pressure_GPa):.3f}"
        rows[1:1] = [
            ("barostat", kind),
            (_pressure_label(result.npt), f"{pressure} (target {_pressure_target(result)})"),
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
    target = result.target_temperature(result.time_fs)
    bottom.plot(time_ps, target, color="black", linewidth=0.8, label="target")
    bottom.set_ylabel("temperature (K)")
    bottom.legend()
    if npt:
        axes[2].plot(time_ps, result.volume_A3)
        axes[2].set_ylabel("volume (Å$^3$)")
        axes[3].plot(time_ps, result.pressure_GPa, label="instantaneous")
        target = result.target_pressure(result.time_fs)
        axes[3].plot(time_ps, target, color="black", linewidth=0.8, label="target")
        axes[3].set_ylabel("pressure (GPa)")
        axes[3].legend()
    axes[-1].set_xlabel("time (ps)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def format_batched_summary(results: Sequence[MDResult], formulas: Sequence[str]) -> str:
    """One row per structure of a batched run (``run_batched_md``): temperature, NVE drift,
    bonds (NPT: start and mean volume, mean pressure; with committee watches: the largest
    force spread, the frames flagged and the steps run, fewer where a watch stopped the
    structure); then the batch's wall time and steps per second."""
    watched = results[0].uncertainty is not None
    barostat = results[0].npt is not None
    header = (
        f"{'#':>4}  {'formula':<12}{'atoms':>6}  {'T (K)':>15}  {'drift meV/atom/ps':>18}"
        f"  {'max bond dev Å':>14}  {'broken':>9}"
    )
    if barostat:
        header += f"  {'V0 -> mean V (Å^3)':>20}  {'P (GPa)':>15}"
    if watched:
        header += f"  {'max spread eV/Å':>15}  {'flagged':>7}  {'steps':>6}"
    lines = [header]
    for index, (result, formula) in enumerate(zip(results, formulas, strict=True)):
        drift = "n/a" if result.energy_drift is None else f"{result.energy_drift:.4g}"
        temperature = f"{result.temperature_mean:.1f} +- {result.temperature_std:.1f}"
        broken = f"{result.bonds.n_broken}/{result.bonds.n_bonds}"
        row = (
            f"{index:>4}  {formula:<12}{result.n_atoms:>6}  {temperature:>15}  {drift:>18}"
            f"  {result.bonds.max_deviation:>14.4f}  {broken:>9}"
        )
        if barostat:
            volume = f"{result.volume_A3[0]:.1f} -> {np.mean(result.volume_A3):.1f}"
            pressure = f"{np.mean(result.pressure_GPa):.2f} +- {np.std(result.pressure_GPa):.2f}"
            row += f"  {volume:>20}  {pressure:>15}"
        if watched:
            watch = result.uncertainty
            row += f"  {watch.max_force_uncertainty:>15.4f}  {watch.n_flagged:>7}"
            row += f"  {result.n_steps:>6}"
        lines.append(row)
    first = results[0]
    n_steps = max(result.n_steps for result in results)
    steps_per_s = n_steps / first.wall_time_s if first.wall_time_s > 0 else float("nan")
    lines.append(
        f"{len(results)} structures, {sum(r.n_atoms for r in results)} atoms, "
        f"{first.ensemble.upper()}, {n_steps} x {first.timestep_fs:g} fs in "
        f"{first.wall_time_s:.2f} s ({steps_per_s:.1f} steps/s)"
    )
    return "\n".join(lines)


def plot_batched_md(results: Sequence[MDResult], path: str | os.PathLike) -> Path:
    """Write a PNG of every structure's total-energy change per atom and temperature vs time.

    Args:
        results: output of ``run_batched_md``.
        path: PNG file to write (parent folders are created).

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.5, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for result in results:
        time_ps = result.time_fs / 1000.0
        total = result.total_energy
        top.plot(time_ps, 1000.0 * (total - total[0]) / result.n_atoms, linewidth=0.8)
        bottom.plot(time_ps, result.temperature_K, linewidth=0.8)
    top.set_ylabel("E_total - E_total(0) (meV/atom)")
    top.set_title(f"batched {results[0].ensemble.upper()} MD, {len(results)} structures")
    first = results[0]
    target = first.target_temperature(first.time_fs)
    bottom.plot(first.time_fs / 1000.0, target, color="black", linewidth=1.0, label="target")
    bottom.set_ylabel("temperature (K)")
    bottom.set_xlabel("time (ps)")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
