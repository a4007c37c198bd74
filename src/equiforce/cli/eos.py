"""``equiforce eos MODEL CRYSTAL``: the equation of state of a crystal (``equiforce.md.eos``).

Writes ``eos.json`` (the sampled volumes, energies and pressures, the fit's V0, E0, B0 and
B0') and ``eos.png`` (E(V) with the fit; the stress's pressure against the fit's) to
``--out``, and prints a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from equiforce.cli.crystal import add_crystal_arguments, add_volume_arguments
from equiforce.files import atomic_write_text

SUMMARY_NAME = "eos.json"
FIGURE_NAME = "eos.png"
RELAXED_NAME = "relaxed.xyz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``eos`` options on ``parser``."""
    from equiforce.md.eos import FORMS

    add_crystal_arguments(parser, relaxed_as="as relaxed.xyz in --out")
    add_volume_arguments(parser, volumes=11, volume_range=0.06)
    parser.add_argument(
        "--form", choices=FORMS, default="birchmurnaghan", help="the fitted form (birchmurnaghan)"
    )
    parser.add_argument("--out", default="eos", help="output folder (eos)")


def run(args: argparse.Namespace) -> int:
    """Compute, fit and write the equation of state; returns the exit code.

    Raises:
        FileNotFoundError: no such crystal file.
        ValueError: too few volumes, a bad range, or a crystal not periodic in 3D.
        RuntimeError: a relaxation that did not converge, or a failed fit.
    """
    from equiforce.cli.crystal import crystal_and_calculator
    from equiforce.md.eos import equation_of_state, volume_ratios

    volume_ratios(args.volumes, args.volume_range)  # checked before any relaxation
    out = Path(args.out)
    crystal, calculator = crystal_and_calculator(args, out / RELAXED_NAME)
    result = equation_of_state(crystal, calculator, args.volumes, args.volume_range, args.form)
    summary = {
        "formula": crystal.get_chemical_formula(),
        "n_atoms": len(crystal),
        "form": result.form,
        "volume_A3": result.volume,
        "volume_per_atom_A3": result.volume / len(crystal),
        "energy_eV": result.energy,
        "bulk_modulus_GPa": result.bulk_modulus,
        "pressure_derivative": result.pressure_derivative,
        "rms_residual_eV": result.rms_residual,
        "sampled_volumes_A3": result.volumes.tolist(),
        "energies_eV": result.energies.tolist(),
        "pressures_GPa": result.pressures.tolist(),
        "fitted_pressures_GPa": result.fitted_pressures.tolist(),
        "max_pressure_difference_GPa": float(
            np.abs(result.pressures - result.fitted_pressures).max()
        ),
    }
    atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    _plot(summary, out / FIGURE_NAME)
    print(
        f"{summary['formula']} ({result.form}): V0 {result.volume:.4f} Å^3 "
        f"({summary['volume_per_atom_A3']:.4f} per atom), E0 {result.energy:.6f} eV, "
        f"B0 {result.bulk_modulus:.2f} GPa, B0' {result.pressure_derivative:.3f}\n"
        f"  fit rms {result.rms_residual:.1e} eV; the stress's pressure within "
        f"{summary['max_pressure_difference_GPa']:.3f} GPa of -dE/dV\nwritten to {out}/"
    )
    return 0


def _plot(summary: dict, path: Path) -> None:
    """E(V) with the fit (left), the stress's pressure and the fit's (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = np.asarray(summary["sampled_volumes_A3"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(volumes, summary["energies_eV"], "o", label="relaxed")
    left.axvline(summary["volume_A3"], color="0.6", lw=0.8)
    left.set_xlabel("volume (Å$^3$)")
    left.set_ylabel("energy (eV)")
    left.set_title(
        f"B0 {summary['bulk_modulus_GPa']:.1f} GPa, B0' {summary['pressure_derivative']:.2f}"
    )
    right.plot(volumes, summary["pressures_GPa"], "o", label="stress")
    right.plot(volumes, summary["fitted_pressures_GPa"], "-", label=f"-dE/dV ({summary['form']})")
    right.set_xlabel("volume (Å$^3$)")
    right.set_ylabel("pressure (GPa)")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
