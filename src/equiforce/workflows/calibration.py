"""How well a committee's spread predicts its error: per-atom force error vs force spread.

``committee_errors`` runs a ``CommitteeCalculator`` over labelled structures and returns, per
atom, the error of the mean force ``|F_mean - F_ref|`` and the predicted spread (both eV/Å);
``calibration_report`` summarises them: force RMSE, mean spread, Spearman rank correlation
(per atom, and per structure of the largest-atom values), and the calibration curve: atoms
binned by spread (equal-count bins), each bin's RMS spread against its RMS error. Both are
lengths of 3-vectors, so a committee whose members scatter about the truth as the mean does lies
on the diagonal; ranking (Spearman) is what an MD threshold needs. ``plot_calibration`` draws
the curves of several test sets.

``calibrate_committee`` (``equiforce calibrate``) rescales a committee's spread on validation
data: ``fit_spread_scales`` finds the factors s that make s times the spread the
maximum-likelihood error scale, each atom's force error vector taken as an isotropic Gaussian
with ``E|dF_i|^2 = (s sigma_i)^2``, each structure's energy error as a Gaussian of standard
deviation ``s sigma_E``: ``s_F^2 = mean_i |dF_i|^2 / sigma_i^2`` over atoms,
``s_E^2 = mean_k dE_k^2 / sigma_E,k^2`` over structures (seed committees are typically
overconfident: s > 1). With ``per_species`` the force factor is also fitted for each
chemical species over its own atoms (``force_spread_scale_by_species``: a committee's spread
can be too small for one element and too large for another, which one factor cannot mend);
a species the validation data lacks keeps the overall factor. The factors go into the
committee's ``committee.json``, which ``CommitteeCalculator.from_paths`` applies.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from equiforce.md.committee import CommitteeCalculator, force_spread_factors


@dataclass(frozen=True)
class CommitteeErrors:
    """Per-atom force errors and spreads of a committee over a set of structures.

    Attributes:
        error: (n_atoms_total,) ``|F_mean - F_ref|`` per atom, eV/Å.
        spread: (n_atoms_total,) the committee's ``force_uncertainty`` per atom, eV/Å.
        structure: (n_atoms_total,) index of each atom's structure.
        energy_error: (n_structures,) ``E_mean - E_ref``, eV; None when a structure has no
            reference energy.
        energy_spread: (n_structures,) the committee's ``energy_uncertainty``, eV.
        species: (n_atoms_total,) each atom's chemical symbol (str); None when not recorded.
    """

    error: np.ndarray
    spread: np.ndarray
    structure: np.ndarray
    energy_error: np.ndarray | None = None
    energy_spread: np.ndarray | None = None
    species: np.ndarray | None = None

    def per_structure_max(self) -> tuple[np.ndarray, np.ndarray]:
        """Each structure's largest atom error and largest atom spread, each (n_structures,)."""
        n = int(self.structure.max()) + 1
        error, spread = np.zeros(n), np.zeros(n)
        np.maximum.at(error, self.structure, self.error)
        np.maximum.at(spread, self.structure, self.spread)
        return error, spread


def committee_errors(
    calculator: CommitteeCalculator, structures: Sequence[Any], forces_key: str = "forces"
) -> CommitteeErrors:
    """Force error of the committee mean and the predicted spread, atom by atom.

    Args:
        calculator: the committee.
        structures: ASE ``Atoms`` with reference forces in ``arrays[forces_key]`` (eV/Å) or in
            an attached single-point calculator (extxyz ``forces`` column); reference energies
            (eV) in ``info["energy"]`` or that calculator are used when every structure has one.
        forces_key: name of the reference forces array.

    Raises:
        ValueError: a structure without reference forces (naming its index).
    """
    errors, spreads, index, energy_errors, energy_spreads, species = [], [], [], [], [], []
    for k, atoms in enumerate(structures):
        reference = _reference_forces(atoms, forces_key, k)
        energy = _reference_energy(atoms)
        work = atoms.copy()
        work.calc = calculator
        predicted = work.get_forces()
        errors.append(np.linalg.norm(predicted - reference, axis=1))
        spreads.append(np.asarray(calculator.results["force_uncertainty"]))
        index.append(np.full(len(atoms), k))
        species.extend(atoms.get_chemical_symbols())
        energy_errors.append(None if energy is None else work.get_potential_energy() - energy)
        energy_spreads.append(calculator.results["energy_uncertainty"])
    with_energies = all(e is not None for e in energy_errors)
    return CommitteeErrors(
        np.concatenate(errors),
        np.concatenate(spreads),
        np.concatenate(index),
        np.array(energy_errors, dtype=np.float64) if with_energies else None,
        np.array(energy_spreads, dtype=np.float64) if with_energies else None,
        np.array(species),
    )


def file_committee_errors(
    calculator: CommitteeCalculator, data: str | os.PathLike, forces_key: str = "forces"
) -> CommitteeErrors:
    """``committee_errors`` on every structure of the extxyz file ``data``.

    Raises:
        ValueError: a structure without reference forces (naming the file and structure).
    """
    from ase.io import read

    try:
        return committee_errors(calculator, read(data, index=":"), forces_key)
    except ValueError as err:
        raise ValueError(f"{data}: {err}") from err


def _reference_forces(atoms, forces_key: str, index: int) -> np.ndarray:
    if forces_key in atoms.arrays:
        return np.asarray(atoms.arrays[forces_key], dtype=np.float64)
    if atoms.calc is not None and "forces" in atoms.calc.results:
        return np.asarray(atoms.calc.results["forces"], dtype=np.float64)
    raise ValueError(f"structure {index} has no reference forces ({forces_key!r})")


def _reference_energy(atoms) -> float | None:
    if "energy" in atoms.info:
        return float(atoms.info["energy"])
    if atoms.calc is not None and "energy" in atoms.calc.results:
        return float(atoms.calc.results["energy"])
    return None


def _mean_squared_ratio(error: np.ndarray, spread: np.ndarray) -> float | None:
    """``mean(error^2 / spread^2)`` over the entries with a non-zero spread (1 for a
    calibrated spread); None if there is none."""
    have = spread > 0
    return float(np.mean(error[have] ** 2 / spread[have] ** 2)) if have.any() else None


def _likelihood_scale(error: np.ndarray, spread: np.ndarray) -> float | None:
    """The maximum-likelihood factor on ``spread`` (module docstring): the square root of
    ``_mean_squared_ratio``."""
    ratio = _mean_squared_ratio(error, spread)
    return None if ratio is None else float(np.sqrt(ratio))


def fit_spread_scales(errors: CommitteeErrors, per_species: bool = False) -> dict[str, Any]:
    """The maximum-likelihood spread scales (module docstring): ``force_spread_scale`` over
    the atoms with a non-zero spread, ``energy_spread_scale`` over the structures with one
    (None without reference energies or energy spreads); with ``per_species`` also
    ``force_spread_scale_by_species`` (symbol -> scale over that species' atoms, for the
    species with a non-zero spread on some atom).

    Raises:
        ValueError: no atom has a non-zero force spread (identical members), or
            ``per_species`` without recorded species.
    """
    force = _likelihood_scale(errors.error, errors.spread)
    if force is None:
        raise ValueError("the members agree on every atom (zero spread): nothing to calibrate")
    energy = None
    if errors.energy_error is not None:
        energy = _likelihood_scale(errors.energy_error, errors.energy_spread)
    scales: dict[str, Any] = {"force_spread_scale": force, "energy_spread_scale": energy}
    if per_species:
        if errors.species is None:
            raise ValueError("per-species scales need the atoms' species (committee_errors)")
        by_species = {}
        for symbol in sorted(set(errors.species.tolist())):
            atoms = errors.species == symbol
            scale = _likelihood_scale(errors.error[atoms], errors.spread[atoms])
            if scale is not None:
                by_species[symbol] = scale
        scales["force_spread_scale_by_species"] = by_species
    return scales


def scaled(errors: CommitteeErrors, scales: Mapping[str, Any]) -> CommitteeErrors:
    """``errors`` with the spreads multiplied by ``scales`` (``fit_spread_scales``'s keys; the
    per-species force scales need ``errors.species``)."""
    by_species = scales.get("force_spread_scale_by_species")
    if by_species:
        force = force_spread_factors(errors.species, scales["force_spread_scale"], by_species)
    else:
        force = scales["force_spread_scale"]
    energy = scales.get("energy_spread_scale") or 1.0
    return dataclasses.replace(
        errors,
        spread=errors.spread * force,
        energy_spread=None if errors.energy_spread is None else errors.energy_spread * energy,
    )


def calibrate_committee(
    folder: str | os.PathLike,
    data: str | os.PathLike,
    forces_key: str = "forces",
    plot: str | os.PathLike | None = None,
    per_species: bool = False,
) -> dict[str, Any]:
    """Fit the spread scales of the committee in ``folder`` on the labelled structures of
    ``data`` (an extxyz file of validation data, never the test set) and store them in its
    ``committee.json`` (atomically; a previous calibration is replaced, the fit always starts
    from the raw spread); ``plot``: a PNG of the spreads before and after
    (``plot_calibration``); ``per_species``: a force scale for each species too
    (``fit_spread_scales``).

    Returns:
        The stored ``calibration``: the scales, ``data``, ``n_structures``, ``n_atoms``, and
        ``before`` / ``after``: the ``calibration_report`` of the raw and the scaled spread
        (force RMSE, mean spread, the mean squared ratio of error to spread: 1 after
        calibration, per species too with ``per_species``; the binned curve).

    Raises:
        ValueError: ``folder`` is not a committee folder, or a structure of ``data`` has no
            reference forces (naming the file and structure).
    """
    from equiforce.files import atomic_write_text
    from equiforce.md.committee import MANIFEST_NAME

    manifest_path = Path(folder) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValueError(f"{folder}: no {MANIFEST_NAME}; not a committee folder")
    calculator = CommitteeCalculator.from_paths([folder], calibrated=False)
    errors = file_committee_errors(calculator, data, forces_key)
    scales = fit_spread_scales(errors, per_species)
    samples = {"before": errors, "after": scaled(errors, scales)}
    summaries = {when: calibration_report(sample) for when, sample in samples.items()}
    calibration = {
        **scales,
        "data": str(data),
        "n_structures": int(errors.structure.max()) + 1,
        "n_atoms": int(len(errors.error)),
        **summaries,
    }
    if plot is not None:
        plot_calibration(summaries, samples, plot, title=f"calibration of {folder} on {data}")
    manifest = json.loads(manifest_path.read_text())
    manifest["calibration"] = calibration
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", manifest_path)
    return calibration


def _force_figures(error: np.ndarray, spread: np.ndarray) -> dict[str, Any]:
    """``n_atoms``, force RMSE (of the mean force, per component) and mean spread (meV/Å) and
    ``mean_squared_error_over_spread`` (mean |dF|^2 / spread^2 over the atoms with a spread;
    1 for a calibrated spread) of per-atom error and spread norms (eV/Å)."""
    return {
        "n_atoms": int(len(error)),
        "force_rmse_meV_A": 1000.0 * float(np.sqrt(np.mean(error**2) / 3.0)),
        "spread_mean_meV_A": 1000.0 * float(np.mean(spread)),
        "mean_squared_error_over_spread": _mean_squared_ratio(error, spread),
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two equally long samples (ties get average ranks)."""
    from scipy.stats import spearmanr  # scipy comes with ase

    return float(spearmanr(x, y).statistic)


def calibration_curve(errors: CommitteeErrors, n_bins: int = 10) -> dict[str, list[float]]:
    """Atoms in ``n_bins`` equal-count bins of spread: each bin's RMS spread and RMS error, eV/Å."""
    order = np.argsort(errors.spread)
    bins = [b for b in np.array_split(order, n_bins) if len(b)]
    return {
        "rms_spread": [float(np.sqrt(np.mean(errors.spread[b] ** 2))) for b in bins],
        "rms_error": [float(np.sqrt(np.mean(errors.error[b] ** 2))) for b in bins],
        "count": [len(b) for b in bins],
    }


def calibration_report(errors: CommitteeErrors, n_bins: int = 10) -> dict[str, Any]:
    """Summary of one test set (errors in meV/Å; ``calibration`` curve in eV/Å).

    Keys: ``n_structures``, ``n_atoms``, ``force_rmse_meV_A`` (of the mean force, per
    component), ``force_error_mean_meV_A`` (mean ``|dF|``), ``spread_mean_meV_A``,
    ``mean_squared_error_over_spread`` (mean ``|dF|^2 / spread^2`` over the atoms with a
    spread: 1 for a calibrated spread), ``spearman_atoms``, ``spearman_structures`` (largest
    atom error vs largest atom spread of each structure), ``calibration``; ``by_species`` when
    the species are recorded: symbol -> ``n_atoms``, ``force_rmse_meV_A``,
    ``spread_mean_meV_A``, ``mean_squared_error_over_spread`` of its atoms.
    """
    frame_error, frame_spread = errors.per_structure_max()
    report = {
        "n_structures": len(frame_error),
        **_force_figures(errors.error, errors.spread),
        "force_error_mean_meV_A": 1000.0 * float(np.mean(errors.error)),
        "spearman_atoms": spearman(errors.spread, errors.error),
        "spearman_structures": spearman(frame_spread, frame_error),
        "calibration": calibration_curve(errors, n_bins),
    }
    if errors.species is not None:
        report["by_species"] = {
            symbol: _force_figures(errors.error[atoms], errors.spread[atoms])
            for symbol in sorted(set(errors.species.tolist()))
            for atoms in [errors.species == symbol]
        }
    return report


def plot_calibration(
    reports: Mapping[str, Mapping[str, Any]],
    samples: Mapping[str, CommitteeErrors],
    path: str | os.PathLike,
    title: str = "committee calibration",
) -> Path:
    """Two panels: per-atom error vs spread (scatter), and the binned calibration curves.

    Args:
        reports: test-set name -> ``calibration_report``.
        samples: test-set name -> its ``CommitteeErrors`` (the scatter).
        path: PNG to write.
        title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    scatter, curve = fig.subplots(1, 2)
    limits = []
    for name, report in reports.items():
        sample = samples[name]
        rho = report["spearman_atoms"]
        scatter.scatter(
            1e3 * sample.spread,
            1e3 * sample.error,
            s=2,
            alpha=0.3,
            label=f"{name} (Spearman {rho:.2f})",
        )
        cal = report["calibration"]
        curve.plot(
            1e3 * np.array(cal["rms_spread"]), 1e3 * np.array(cal["rms_error"]), "o-", label=name
        )
        limits += [1e3 * max(cal["rms_spread"]), 1e3 * max(cal["rms_error"])]
    for axis in (scatter, curve):
        axis.set_xlabel("predicted force spread (meV/Å)")
        axis.set_ylabel("force error |F_mean - F_ref| (meV/Å)")
        axis.legend()
    scatter.set_xscale("log")
    scatter.set_yscale("log")
    scatter.set_title("per atom")
    top = max(limits) if limits else 1.0
    curve.plot([0, top], [0, top], color="black", linewidth=0.8, label="calibrated")
    curve.set_title("binned (equal-count bins): RMS error vs RMS spread")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path
