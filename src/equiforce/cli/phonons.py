"""``equiforce phonons MODEL CRYSTAL``: phonon dispersion and density of states of a crystal.

The force constants come from the exact Hessian of a supercell (``equiforce.md.phonons``);
the run writes ``phonons.json`` (the band path's wave vectors and frequencies, the density of
states, the lowest frequency and the imaginary modes, the harmonic free energy, entropy and
heat capacity at ``--temperatures``) and ``phonons.png`` (dispersion and
density of states) to ``--out``, and prints a summary; with ``--phonopy``, also
``phonopy_params.yaml``, the force constants for phonopy (``equiforce.md.phonopy_bridge``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase import units

from equiforce.cli.crystal import add_crystal_arguments, add_phonon_arguments
from equiforce.files import atomic_write_text

SUMMARY_NAME = "phonons.json"
FIGURE_NAME = "phonons.png"
THZ_TO_MEV = 4.135667696  # h * 1 THz in meV
# frequencies below minus this (THz) count as imaginary modes (round-off and the interpolation
# leave the acoustic branches near Gamma within it)
IMAGINARY_TOLERANCE = 0.05
# a supercell force above this (eV/Å) means the crystal is not at a minimum
MAX_FORCE = 1e-3
RELAXED_NAME = "relaxed.xyz"
PHONOPY_NAME = "phonopy_params.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``phonons`` options on ``parser``."""
    add_crystal_arguments(parser, relaxed_as="as relaxed.xyz in --out")
    add_phonon_arguments(parser, mesh=16, mesh_for="the density of states")
    parser.add_argument(
        "--path",
        default=None,
        help="band path of special points, e.g. GXWKGLUWLK (default: the lattice's own)",
    )
    parser.add_argument("--points", type=int, default=200, help="wave vectors along the path")
    parser.add_argument(
        "--width", type=float, default=0.1, help="density of states broadening, THz (0.1)"
    )
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=(0.0, 100.0, 300.0, 500.0, 1000.0),
        metavar="T",
        help="temperatures (K) of the harmonic free energy, entropy and heat capacity, from "
        "the --mesh modes (0 100 300 500 1000)",
    )
    parser.add_argument(
        "--phonopy",
        action="store_true",
        help=f"also write {PHONOPY_NAME} (crystal, supercell, force constants; phonopy's "
        "primitive cell found by symmetry) for phonopy-load and phonopy.load",
    )
    parser.add_argument("--out", default="phonons", help="output folder (phonons)")


def run(args: argparse.Namespace) -> int:
    """Compute and write the phonons; returns the exit code.

    Raises:
        FileNotFoundError: no such crystal file.
        ValueError: a crystal not periodic in 3D, a bad supercell, mesh, point count or width.
        ImportError: ``--phonopy`` without phonopy installed (checked first).
    """
    from equiforce.cli.crystal import crystal_and_calculator
    from equiforce.md.phonons import density_of_states, force_constants, thermal_properties
    from equiforce.md.phonopy_bridge import phonopy_yaml, require_phonopy, to_phonopy

    if args.phonopy:
        require_phonopy()

    if args.points < 2 or min(args.mesh) < 1 or not args.width > 0:
        raise ValueError(
            f"--points {args.points}, --mesh {args.mesh}, --width {args.width}: need at least "
            "2 points, a mesh of at least 1 and a positive width"
        )
    if min(args.temperatures) < 0:
        raise ValueError(f"--temperatures {args.temperatures}: temperatures must be >= 0 K")
    out = Path(args.out)
    crystal, calculator = crystal_and_calculator(args, out / RELAXED_NAME)
    model = force_constants(crystal, calculator, tuple(args.supercell))
    path = crystal.cell.bandpath(args.path, npoints=args.points)
    bands = model.frequencies(path.kpts)
    grid, density = density_of_states(model, tuple(args.mesh), args.width)
    thermal = thermal_properties(model, tuple(args.mesh), np.asarray(args.temperatures))
    x, special_x, labels = path.get_linear_kpoint_axis()
    imaginary = bands < -IMAGINARY_TOLERANCE
    summary = {
        "formula": crystal.get_chemical_formula(),
        "supercell": list(model.supercell),
        "path": path.path,
        "special_points": {name: list(point) for name, point in path.special_points.items()},
        "qpoints": path.kpts.tolist(),
        "distance": x.tolist(),
        "special_distance": list(special_x),
        "special_labels": list(labels),
        "frequencies_THz": bands.tolist(),
        "dos_frequency_THz": grid.tolist(),
        "dos_states_per_THz": density.tolist(),
        "max_frequency_THz": float(bands.max()),
        "min_frequency_THz": float(bands.min()),
        "imaginary_modes": int(imaginary.sum()),
        "stable": not bool(imaginary.any()),
        "max_force_eV_per_A": model.max_force,
        "sum_rule_residual_eV_per_A2": model.sum_rule_residual,
        "thermal": {
            "temperature_K": thermal.temperature.tolist(),
            "free_energy_eV": thermal.free_energy.tolist(),
            "energy_eV": thermal.energy.tolist(),
            "entropy_kB": (thermal.entropy / units.kB).tolist(),
            "heat_capacity_kB": (thermal.heat_capacity / units.kB).tolist(),
            "zero_point_energy_eV": thermal.zero_point_energy,
            "skipped_modes": thermal.skipped_modes,
            "imaginary_modes": thermal.imaginary_modes,
            "n_atoms": len(crystal),
        },
    }
    atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    _plot(summary, out / FIGURE_NAME)
    if args.phonopy:
        atomic_write_text(phonopy_yaml(to_phonopy(model)), out / PHONOPY_NAME)
    print(_format(summary))
    print(f"phonons written to {out}/")
    return 0


def _format(summary: dict) -> str:
    """The printed summary: frequencies, stability and the checks."""
    top, low = summary["max_frequency_THz"], summary["min_frequency_THz"]
    lines = [
        f"{summary['formula']}: supercell {' x '.join(map(str, summary['supercell']))}, "
        f"path {summary['path']}",
        f"  highest frequency {top:.3f} THz ({top * THZ_TO_MEV:.2f} meV), lowest {low:.3f} THz",
    ]
    if summary["stable"]:
        lines.append("  dynamically stable: no imaginary mode along the path")
    else:
        lines.append(
            f"  UNSTABLE: {summary['imaginary_modes']} imaginary modes along the path (below "
            f"-{IMAGINARY_TOLERANCE} THz, shown negative)"
        )
    thermal = summary["thermal"]
    lines.append(f"  per cell of {thermal['n_atoms']} atoms (harmonic, --mesh modes):")
    lines.append("      T (K)      F (eV)      S (k_B)    C_V (k_B)")
    columns = ("temperature_K", "free_energy_eV", "entropy_kB", "heat_capacity_kB")
    for T, F, S, C in zip(*(thermal[name] for name in columns), strict=True):
        lines.append(f"  {T:9.1f} {F:11.5f} {S:12.4f} {C:12.4f}")
    if thermal["imaginary_modes"]:
        lines.append(
            f"  ({thermal['imaginary_modes']} imaginary mesh modes left out of these figures)"
        )
    if summary["max_force_eV_per_A"] > MAX_FORCE:
        lines.append(
            f"  warning: forces up to {summary['max_force_eV_per_A']:.2e} eV/Å on the "
            "supercell: the crystal is not at a minimum (relax it first: equiforce relax "
            "--cell --fmax 1e-4)"
        )
    return "\n".join(lines)


def _plot(summary: dict, path: Path) -> None:
    """The dispersion (left) and the density of states (right), frequencies in THz."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bands, dos) = plt.subplots(
        1, 2, figsize=(9, 4.5), sharey=True, gridspec_kw={"width_ratios": [3, 1]}
    )
    distance = np.asarray(summary["distance"])
    frequencies = np.asarray(summary["frequencies_THz"])
    breaks = np.flatnonzero(np.diff(distance) == 0) + 1  # a path's jumps (",": K|U)
    for part in np.split(np.arange(len(distance)), breaks):
        bands.plot(distance[part], frequencies[part], color="C0", lw=1)
    ticks: dict[float, str] = {}
    special = zip(summary["special_distance"], summary["special_labels"], strict=True)
    for position, name in special:
        name = r"$\Gamma$" if name == "G" else name
        ticks[position] = f"{ticks[position]}|{name}" if position in ticks else name
    for position in ticks:
        bands.axvline(position, color="0.7", lw=0.5)
    bands.axhline(0.0, color="0.5", lw=0.5)
    bands.set_xticks(list(ticks), list(ticks.values()))
    bands.set_xlim(summary["distance"][0], summary["distance"][-1])
    bands.set_ylabel("frequency (THz)")
    bands.set_title(f"{summary['formula']} phonons")
    dos.plot(summary["dos_states_per_THz"], summary["dos_frequency_THz"], color="C1")
    dos.set_xlabel("states / THz")
    dos.set_xlim(left=0)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
