"""``equiforce vibrations MODEL STRUCTURE``: normal modes, zero-point energy and harmonic
thermochemistry from the exact Hessian (``equiforce.md.vibrations``).

Writes ``vibrations.json`` (frequencies in cm^-1, imaginary ones negative, the zero-point
energy, the thermochemistry at ``--temperatures``) and ``modes.xyz`` (every mode as
displacement vectors, jmol's format) to ``--out``, and prints ASE's table of the modes and a
summary. ``STRUCTURE`` may name a frame, e.g. ``neb/band.xyz@3`` (ASE's syntax).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiforce.files import atomic_write_text

SUMMARY_NAME = "vibrations.json"
MODES_NAME = "modes.xyz"
RELAXED_NAME = "relaxed.xyz"
# forces above this (eV/Å) on the moving atoms: not a stationary point
MAX_FORCE = 1e-2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``vibrations`` options on ``parser``."""
    from equiforce.cli.options import add_calculator_options, add_state_options

    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument(
        "structure",
        help="the structure, any ASE format (its last frame, or file@index), at a minimum or "
        "a saddle point",
    )
    parser.add_argument(
        "--relax",
        action="store_true",
        help=f"relax the positions first (BFGS, fmax 1e-4 eV/Å), written as {RELAXED_NAME}",
    )
    parser.add_argument(
        "--indices",
        type=int,
        nargs="+",
        default=None,
        help="the atoms that vibrate (default: those FixAtoms leaves free)",
    )
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=(298.15,),
        metavar="T",
        help="temperatures of the thermochemistry, K (298.15)",
    )
    parser.add_argument(
        "--pressure", type=float, default=101325.0, help="ideal-gas pressure, Pa (101325)"
    )
    parser.add_argument(
        "--symmetry-number",
        type=int,
        default=1,
        help="rotational symmetry number of a molecule (1; water 2, ammonia 3, methane 12)",
    )
    parser.add_argument(
        "--transition-state",
        action="store_true",
        help="a first-order saddle point: its one imaginary mode is left out of the "
        "thermochemistry",
    )
    add_calculator_options(parser)
    add_state_options(parser)
    parser.add_argument("--out", default="vibrations", help="output folder (vibrations)")


def run(args: argparse.Namespace) -> int:
    """Compute and write the vibrations; returns the exit code.

    Raises:
        FileNotFoundError: no such structure file.
        ValueError: bad atom indices, a temperature <= 0, or imaginary modes where
            ``--transition-state`` (or its absence) expects none (or one): named.
    """
    from ase.io import read, write

    from equiforce.cli.options import apply_state_options, model_calculator
    from equiforce.data import keys
    from equiforce.data.charge_spin import atoms_state
    from equiforce.md.relax import relax_structure
    from equiforce.md.vibrations import thermochemistry, vibrations

    path = args.structure.rsplit("@", 1)[0]
    if not Path(path).exists():
        raise FileNotFoundError(f"structure file {path} does not exist")
    if min(args.temperatures) <= 0:
        raise ValueError(f"--temperatures {args.temperatures}: temperatures must be > 0 K")
    atoms = read(args.structure)
    apply_state_options(args, [atoms])
    calculator = model_calculator(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.relax:
        relaxed = relax_structure(atoms, calculator, fmax=1e-4, steps=2000, optimizer="bfgs")
        atoms = relaxed.atoms
        write(out / RELAXED_NAME, atoms)
        print(f"relaxed in {relaxed.n_steps} steps, fmax {relaxed.fmax:.1e} eV/Å")
    result = vibrations(atoms, calculator, args.indices)
    thermo = thermochemistry(
        result,
        atoms,
        args.temperatures,
        pressure=args.pressure,
        symmetry_number=args.symmetry_number,
        spin=(atoms_state(atoms)[keys.TOTAL_SPIN] - 1) / 2,  # S of the multiplicity 2S+1
        transition_state=args.transition_state,
    )
    summary = {
        "formula": atoms.get_chemical_formula(),
        "moving_atoms": len(result.data.get_indices()),
        "rigid_body_modes": result.rigid_body,
        "geometry": result.geometry,
        "frequencies_cm-1": result.frequencies.tolist(),
        "imaginary_modes": result.imaginary_modes,
        "zero_point_energy_eV": result.zero_point_energy,
        "potential_energy_eV": result.potential_energy,
        "max_force_eV_per_A": result.max_force,
        "thermochemistry": {
            "model": thermo.model,
            "pressure_Pa": thermo.pressure,
            "transition_state": args.transition_state,
            "temperature_K": thermo.temperature.tolist(),
            "enthalpy_eV": thermo.enthalpy.tolist(),
            "entropy_eV_per_K": thermo.entropy.tolist(),
            "free_energy_eV": thermo.free_energy.tolist(),
        },
    }
    atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    result.data.write_jmol(out / MODES_NAME)
    print(result.data.tabulate())
    print(_format(summary))
    print(f"vibrations written to {out}/")
    return 0


def _format(summary: dict) -> str:
    """The printed summary: the internal modes, the checks and the thermochemistry."""
    frequencies = summary["frequencies_cm-1"]
    lines = [
        f"{summary['formula']}: {len(frequencies)} internal modes "
        f"({summary['rigid_body_modes']} rigid-body motions projected out), "
        f"zero-point energy {summary['zero_point_energy_eV']:.4f} eV",
    ]
    if summary["imaginary_modes"]:
        imaginary = ", ".join(f"{-f:.1f}i" for f in frequencies[: summary["imaginary_modes"]])
        lines.append(f"  {summary['imaginary_modes']} imaginary: {imaginary} cm^-1")
    if summary["max_force_eV_per_A"] > MAX_FORCE:
        lines.append(
            f"  WARNING: forces up to {summary['max_force_eV_per_A']:.3f} eV/Å: not a "
            "stationary point (relax it, --relax)"
        )
    thermo = summary["thermochemistry"]
    name = "G" if thermo["model"] == "ideal-gas" else "F"
    enthalpy = "H" if thermo["model"] == "ideal-gas" else "U"
    lines.append(
        f"  {thermo['model']} thermochemistry:    T (K)   {enthalpy} (eV)   S (meV/K)   {name} (eV)"
    )
    for t, h, s, g in zip(
        thermo["temperature_K"],
        thermo["enthalpy_eV"],
        thermo["entropy_eV_per_K"],
        thermo["free_energy_eV"],
        strict=True,
    ):
        lines.append(f"  {t:34.2f} {h:10.4f} {s * 1e3:10.4f} {g:10.4f}")
    return "\n".join(lines)
