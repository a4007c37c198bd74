"""``equiforce saddle MODEL GUESS``: a transition state from a guess, by P-RFO on the exact
Hessian (``equiforce.md.saddle``), checked by its vibrations.

Writes ``saddle.xyz`` (the saddle point with its energy, forces and the followed mode as the
per-atom array ``mode``) and ``saddle.json`` (energy, convergence, the curvatures, the
imaginary frequency and the lowest real ones from ``equiforce.md.vibrations``) to ``--out``,
and prints a summary; exits 1 when it did not converge. ``GUESS`` may name a frame, e.g.
``neb/band.xyz@3`` (ASE's syntax).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiforce.files import atomic_write_text

STRUCTURE_NAME = "saddle.xyz"
SUMMARY_NAME = "saddle.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``saddle`` options on ``parser``."""
    from equiforce.cli.options import add_calculator_options, add_state_options

    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument("guess", help="the guess, any ASE format (its last frame, or file@index)")
    parser.add_argument("--fmax", type=float, default=1e-3, help="force threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=200, help="most steps (200)")
    parser.add_argument(
        "--max-step", type=float, default=0.1, help="largest move of an atom per step, Å"
    )
    parser.add_argument(
        "--hessian-every",
        type=int,
        default=1,
        help="the exact Hessian every N steps, Bofill's update in between (1: every step; "
        "0: only the first; larger N for large systems)",
    )
    parser.add_argument(
        "--indices",
        type=int,
        nargs="+",
        default=None,
        help="the atoms that move (default: those FixAtoms leaves free)",
    )
    add_calculator_options(parser)
    add_state_options(parser)
    parser.add_argument("--out", default="saddle", help="output folder (saddle)")


def run(args: argparse.Namespace) -> int:
    """Search, check and write the saddle point; returns the exit code (1: not converged).

    Raises:
        FileNotFoundError: no such guess file.
        ValueError: a bad option.
    """
    from ase.io import read, write

    from equiforce.cli.options import apply_state_options, model_calculator
    from equiforce.md.saddle import find_saddle
    from equiforce.md.vibrations import vibrations

    path = args.guess.rsplit("@", 1)[0]
    if not Path(path).exists():
        raise FileNotFoundError(f"guess file {path} does not exist")
    guess = read(args.guess)
    apply_state_options(args, [guess])
    calculator = model_calculator(args)
    result = find_saddle(
        guess,
        calculator,
        fmax=args.fmax,
        steps=args.steps,
        max_step=args.max_step,
        indices=args.indices,
        hessian_every=args.hessian_every,
    )
    modes = vibrations(result.atoms, calculator, args.indices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saddle = result.atoms.copy()
    saddle.calc = result.atoms.calc
    saddle.new_array("mode", result.mode)
    write(out / STRUCTURE_NAME, saddle, format="extxyz")
    summary = {
        "formula": guess.get_chemical_formula(),
        "converged": result.converged,
        "steps": result.n_steps,
        "hessians": result.hessians,
        "fmax_eV_per_A": result.fmax,
        "energy_eV": float(result.atoms.get_potential_energy()),
        "energy_change_eV": float(result.atoms.get_potential_energy() - _energy(guess, calculator)),
        "negative_curvatures": result.negative_modes,
        "lowest_curvatures_eV_per_A2": result.curvatures[:4].tolist(),
        "imaginary_modes": modes.imaginary_modes,
        "lowest_frequencies_cm-1": modes.frequencies[:4].tolist(),
    }
    atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    state = "converged" if result.converged else "NOT converged"
    frequencies = ", ".join(f"{f:.1f}" for f in summary["lowest_frequencies_cm-1"])
    print(
        f"{summary['formula']}: {state} in {result.n_steps} steps (fmax {result.fmax:.1e} "
        f"eV/Å), energy {summary['energy_eV']:.6f} eV ({summary['energy_change_eV']:+.4f} "
        f"from the guess)\n  {modes.imaginary_modes} imaginary mode(s); lowest frequencies "
        f"{frequencies} cm^-1 (imaginary negative)\nsaddle point written to {out / STRUCTURE_NAME}"
    )
    return 0 if result.converged else 1


def _energy(atoms, calculator) -> float:
    """The potential energy of a copy of ``atoms``, eV."""
    atoms = atoms.copy()
    atoms.calc = calculator
    return float(atoms.get_potential_energy())
