"""How well a committee's spread predicts its error: per-atom force error vs force spread.

``committee_errors`` runs a ``CommitteeCalculator`` over labelled structures and returns, per
atom, the error of the mean force ``|F_mean - F_ref|`` and the predicted spread (both eV/Å);
``calibration_report`` summarises them: force RMSE, mean spread, Spearman rank correlation
(per atom, and per structure of the largest-atom values), and the calibration curve: atoms
binned by spread (equal-count bins), each bin's RMS spread against its RMS error. Both are
lengths of 3-vectors, so a committee whose members scatter about the truth as the mean does lies
on the diagonal; ranking (Spearman) is what an MD threshold needs. ``plot_calibration`` draws
the curves of several test sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from equiforce.md.committee import CommitteeCalculator


@dataclass(frozen=True)
class CommitteeErrors:
    """Per-atom force errors and spreads of a committee over a set of structures.

    Attributes:
        error: (n_atoms_total,) ``|F_mean - F_ref|`` per atom, eV/Å.
        spread: (n_atoms_total,) the committee's ``force_uncertainty`` per atom, eV/Å.
        structure: (n_atoms_total,) index of each atom's structure.
    """

    error: np.ndarray
    spread: np.ndarray
    structure: np.ndarray

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
            an attached single-point calculator (extxyz ``forces`` column).
        forces_key: name of the reference forces array.

    Raises:
        ValueError: a structure without reference forces (naming its index).
    """
    errors, spreads, index = [], [], []
    for k, atoms in enumerate(structures):
        reference = _reference_forces(atoms, forces_key, k)
        work = atoms.copy()
        work.calc = calculator
        predicted = work.get_forces()
        errors.append(np.linalg.norm(predicted - reference, axis=1))
        spreads.append(np.asarray(calculator.results["force_uncertainty"]))
        index.append(np.full(len(atoms), k))
    return CommitteeErrors(np.concatenate(errors), np.concatenate(spreads), np.concatenate(index))


def _reference_forces(atoms, forces_key: str, index: int) -> np.ndarray:
    if forces_key in atoms.arrays:
        return np.asarray(atoms.arrays[forces_key], dtype=np.float64)
    if atoms.calc is not None and "forces" in atoms.calc.results:
        return np.asarray(atoms.calc.results["forces"], dtype=np.float64)
    raise ValueError(f"structure {index} has no reference forces ({forces_key!r})")


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
    ``spearman_atoms``, ``spearman_structures`` (largest atom error vs largest atom spread of
    each structure), ``calibration``.
    """
    frame_error, frame_spread = errors.per_structure_max()
    return {
        "n_structures": len(frame_error),
        "n_atoms": len(errors.error),
        "force_rmse_meV_A": 1000.0 * float(np.sqrt(np.mean(errors.error**2) / 3.0)),
        "force_error_mean_meV_A": 1000.0 * float(np.mean(errors.error)),
        "spread_mean_meV_A": 1000.0 * float(np.mean(errors.spread)),
        "spearman_atoms": spearman(errors.spread, errors.error),
        "spearman_structures": spearman(frame_spread, frame_error),
        "calibration": calibration_curve(errors, n_bins),
    }


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
