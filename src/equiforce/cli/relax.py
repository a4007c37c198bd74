"""``equiforce relax MODEL IN OUT``: relax every structure of a file (positions, and cells).

Each relaxed structure is appended to OUT as it finishes (``--batched``: each batch's, in
input order), so a stopped run keeps them and ``--resume`` relaxes only the rest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiforce.cli.options import (
    add_batch_atoms_option,
    add_calculator_options,
    add_state_options,
    apply_state_options,
    model_calculator,
)
from equiforce.md.relax import CELL_MODES, OPTIMIZERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``relax`` options on ``parser``."""
    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument("input", help="structures to relax, any ASE format (all frames)")
    parser.add_argument(
        "output",
        help="relaxed structures (extxyz: energy, forces, stress, relax_converged, relax_steps);"
        " a JSON summary is written beside it (OUTPUT with suffix .json)",
    )
    parser.add_argument("--fmax", type=float, default=0.05, help="force threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="most optimizer steps")
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="fire",
        help="ASE's FIRE (default), BFGS or LBFGS (limited memory: large structures)",
    )
    parser.add_argument(
        "--cell",
        action="store_true",
        help="relax the cells of 3D-periodic structures too (ASE's FrechetCellFilter)",
    )
    parser.add_argument(
        "--pressure", type=float, default=0.0, help="external pressure with --cell, GPa"
    )
    parser.add_argument(
        "--cell-mode",
        choices=tuple(CELL_MODES),
        default="full",
        help="with --cell: every cell component (full), the shape at constant volume "
        "(constant-volume) or the volume at constant shape (hydrostatic)",
    )
    parser.add_argument(
        "--fix-symmetry",
        nargs="?",
        type=float,
        const=0.01,
        default=None,
        metavar="SYMPREC",
        help="keep each structure's space group (ASE's FixSymmetry; spglib finds it within "
        "SYMPREC Å, default 0.01); written as relax_spacegroup",
    )
    parser.add_argument(
        "--batched",
        action="store_true",
        help="relax all structures at once with TorchSim's batched FIRE (needs equiforce[sim])",
    )
    add_batch_atoms_option(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the structures OUTPUT already holds (a stopped run over the same input) and "
        "relax the rest",
    )
    add_calculator_options(parser)
    add_state_options(parser)


def run(args: argparse.Namespace) -> int:
    """Relax, print the per-structure summary, write the structures and the JSON summary."""
    from ase.io import read

    from equiforce.files import atomic_write_text
    from equiforce.md.relax import (
        append_relaxed,
        format_relax_summary,
        read_relaxed,
        relax_batched,
        relax_structures,
    )

    if not Path(args.input).exists():
        raise FileNotFoundError(f"structure file {args.input} does not exist")
    if Path(args.output).suffix not in (".xyz", ".extxyz"):
        raise ValueError(f"output {args.output}: use a .xyz or .extxyz file name (extxyz)")
    if args.pressure != 0.0 and not args.cell:
        raise ValueError("--pressure needs --cell (the pressure acts on the cell)")
    if args.cell_mode != "full" and not args.cell:
        raise ValueError(f"--cell-mode {args.cell_mode} needs --cell")
    frames = read(args.input, index=":")
    apply_state_options(args, frames)
    options = dict(
        fmax=args.fmax,
        steps=args.steps,
        cell=args.cell,
        pressure_GPa=args.pressure,
        cell_mode=args.cell_mode,
    )
    if args.batched and args.dispersion is not None:
        raise ValueError("--dispersion adds D3 to the ASE calculator: drop --batched")
    if args.batched and args.optimizer != "fire":
        raise ValueError(
            f"--batched relaxes with TorchSim's FIRE; drop --optimizer {args.optimizer}"
        )
    done = read_relaxed(args.output, frames) if args.resume else []
    left = frames[len(done) :]
    with open(args.output, "a" if args.resume else "w") as handle:
        options["on_result"] = lambda result: append_relaxed(result, handle)
        if args.batched:
            from equiforce.md.torchsim import EquiforceModel

            model = EquiforceModel(args.model, device=args.device, precision=args.precision)
            relaxed = relax_batched(
                left,
                model,
                max_batch_atoms=args.max_batch_atoms,
                symmetry_tolerance=args.fix_symmetry,
                **options,
            )
        else:
            calculator = model_calculator(args)
            relaxed = relax_structures(
                left,
                calculator,
                optimizer=args.optimizer,
                symmetry_tolerance=args.fix_symmetry,
                **options,
            )
    results = done + relaxed
    print(format_relax_summary(results))
    summary = [
        {
            "index": index,
            "formula": result.atoms.get_chemical_formula(),
            "converged": result.converged,
            "steps": result.n_steps,
            "fmax_eV_per_A": result.fmax,
            "energy_eV": result.energy,
            "cell_relaxed": result.cell_relaxed,
            "spacegroup": result.spacegroup,
        }
        for index, result in enumerate(results)
    ]
    summary_path = Path(args.output).with_suffix(".json")
    atomic_write_text(json.dumps(summary, indent=2) + "\n", summary_path)
    print(f"relaxed structures written to {args.output}, summary to {summary_path}")
    return 0
