"""``equiforce qha MODEL CRYSTAL``: quasi-harmonic thermal expansion of a crystal.

Phonons at several volumes (``equiforce.md.qha``) give the volume, bulk modulus and expansion
coefficient against temperature; the run writes ``qha.json`` and ``qha.png`` (volume and
expansion coefficient against temperature) to ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from equiforce.cli.crystal import (
    add_crystal_arguments,
    add_phonon_arguments,
    add_volume_arguments,
)
from equiforce.files import atomic_write_text

SUMMARY_NAME = "qha.json"
FIGURE_NAME = "qha.png"
RELAXED_NAME = "relaxed.xyz"
PRINTED_EVERY = 100.0  # K: the table's rows (all temperatures are in the JSON)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``qha`` options on ``parser``."""
    add_crystal_arguments(parser, relaxed_as="as relaxed.xyz in --out")
    add_phonon_arguments(parser, mesh=12, mesh_for="the free energy")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs=3,
        default=(0.0, 1000.0, 10.0),
        metavar=("START", "STOP", "STEP"),
        help="temperature grid, K (0 1000 10: a fine step for d ln V / dT)",
    )
    add_volume_arguments(parser, volumes=7, volume_range=0.04)
    parser.add_argument("--out", default="qha", help="output folder (qha)")


def run(args: argparse.Namespace) -> int:
    """Compute and write the quasi-harmonic equilibrium; returns the exit code.

    Raises:
        FileNotFoundError: no such crystal file.
        ValueError: bad temperatures, volumes or range, or a crystal not periodic in 3D.
        RuntimeError: a relaxation that did not converge.
    """
    from equiforce.cli.crystal import crystal_and_calculator
    from equiforce.md.eos import volume_ratios
    from equiforce.md.qha import quasi_harmonic

    start, stop, step = args.temperatures
    if start < 0 or not step > 0 or stop < start:
        raise ValueError(
            f"--temperatures {start:g} {stop:g} {step:g}: START >= 0, STOP >= START, STEP > 0"
        )
    volume_ratios(args.volumes, args.volume_range)  # checked before any relaxation
    out = Path(args.out)
    crystal, calculator = crystal_and_calculator(args, out / RELAXED_NAME)
    temperatures = np.arange(start, stop + step / 2, step)
    result = quasi_harmonic(
        crystal,
        calculator,
        tuple(args.supercell),
        tuple(args.mesh),
        temperatures,
        n_volumes=args.volumes,
        volume_range=args.volume_range,
    )
    summary = {
        "formula": crystal.get_chemical_formula(),
        "n_atoms": len(crystal),
        "supercell": list(args.supercell),
        "mesh": list(args.mesh),
        "temperature_K": result.temperature.tolist(),
        "volume_A3": _listed(result.volume),
        "bulk_modulus_GPa": _listed(result.bulk_modulus),
        "volumetric_expansion_per_K": _listed(result.expansion),
        "linear_expansion_per_K": _listed(result.expansion / 3),
        "free_energy_eV": _listed(result.free_energy),
        "static_volume_A3": result.static_volume,
        "sampled_volumes_A3": result.volumes.tolist(),
        "static_energy_eV": result.static_energy.tolist(),
        "vibrational_free_energy_eV": result.vibrational_free_energy.tolist(),
        "outside_sampled_volumes_K": list(result.outside),
    }
    atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    _plot(summary, out / FIGURE_NAME)
    print(_format(summary))
    print(f"written to {out}/")
    return 0


def _listed(values: np.ndarray) -> list[float | None]:
    """``values`` for JSON: NaN as null."""
    return [None if np.isnan(value) else float(value) for value in values]


def _format(summary: dict) -> str:
    """The table (every ``PRINTED_EVERY`` K) and the temperatures outside the volumes."""
    lines = [
        f"{summary['formula']}: quasi-harmonic, per cell of {summary['n_atoms']} atoms "
        f"(static minimum {summary['static_volume_A3']:.4f} Å^3)",
        "      T (K)     V (Å^3)    B (GPa)   alpha_V (1/K)",
    ]
    columns = ("temperature_K", "volume_A3", "bulk_modulus_GPa", "volumetric_expansion_per_K")
    for T, V, B, alpha in zip(*(summary[name] for name in columns), strict=True):
        if T % PRINTED_EVERY == 0 and V is not None:
            expansion = "        n/a" if alpha is None else f"{alpha:12.3e}"
            lines.append(f"  {T:9.1f} {V:11.4f} {B:10.2f}  {expansion}")
    if summary["outside_sampled_volumes_K"]:
        first = summary["outside_sampled_volumes_K"][0]
        lines.append(
            f"  from {first:g} K the minimum leaves the sampled volumes (widen --volume-range, "
            "or the crystal is near its stability limit)"
        )
    return "\n".join(lines)


def _plot(summary: dict, path: Path) -> None:
    """Volume (left) and linear expansion coefficient (right) against temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperature = np.asarray(summary["temperature_K"])
    volume = np.array(summary["volume_A3"], dtype=float)
    expansion = np.array(summary["linear_expansion_per_K"], dtype=float)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(temperature, volume, color="C0")
    left.axhline(summary["static_volume_A3"], color="0.6", lw=0.8, ls="--")
    left.set_xlabel("temperature (K)")
    left.set_ylabel("volume per cell (Å$^3$)")
    right.plot(temperature, expansion * 1e6, color="C1")
    right.set_xlabel("temperature (K)")
    right.set_ylabel("linear expansion (10$^{-6}$/K)")
    figure.suptitle(f"{summary['formula']}: quasi-harmonic")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
