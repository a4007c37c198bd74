"""``equiforce elastic MODEL CRYSTAL``: elastic constants and moduli of a crystal.

Strains the cell, relaxes the atoms inside it and fits the stress (``equiforce.md.elastic``);
prints the 6 x 6 matrix (GPa), the bulk and shear moduli (Voigt, Reuss, Hill), Young's modulus,
Poisson's ratio and Born's stability, and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from equiforce.cli.crystal import add_crystal_arguments
from equiforce.files import atomic_write_text
from equiforce.md.elastic import DEFAULT_STRAINS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``elastic`` options on ``parser``."""
    add_crystal_arguments(parser, relaxed_as="beside --out as its name with suffix .xyz")
    parser.add_argument(
        "--strains",
        type=float,
        nargs="+",
        default=DEFAULT_STRAINS,
        metavar="E",
        help="strain magnitudes of each Voigt component (-0.01 -0.005 0.005 0.01)",
    )
    parser.add_argument(
        "--clamped-ions",
        action="store_true",
        help="leave the atoms where the strain puts them (clamped-ion constants)",
    )
    parser.add_argument(
        "--fmax", type=float, default=1e-4, help="force threshold of the ion relaxations, eV/Å"
    )
    parser.add_argument("--out", default="elastic.json", help="the results (elastic.json)")


def run(args: argparse.Namespace) -> int:
    """Compute, print and write the elastic constants; returns the exit code.

    Raises:
        FileNotFoundError: no such crystal file.
        ValueError: a crystal not periodic in 3D, or bad strains.
        RuntimeError: a relaxation that did not converge.
    """
    from equiforce.cli.crystal import crystal_and_calculator
    from equiforce.md.elastic import elastic_constants

    out = Path(args.out)
    crystal, calculator = crystal_and_calculator(args, out.with_suffix(".xyz"))
    result = elastic_constants(
        crystal,
        calculator,
        strains=args.strains,
        relax_ions=not args.clamped_ions,
        fmax=args.fmax,
    )
    payload = {"formula": crystal.get_chemical_formula(), **asdict(result)}
    payload["constants"] = result.constants.tolist()
    atomic_write_text(json.dumps(payload, indent=1), out)
    print(format_elastic(crystal.get_chemical_formula(), result))
    print(f"written to {out}")
    return 0


def format_elastic(formula: str, result) -> str:
    """The matrix and the moduli as text (GPa)."""
    kind = "relaxed-ion" if result.relaxed_ions else "clamped-ion"
    lines = [f"{formula}: {kind} elastic constants C_ij (GPa; xx yy zz yz xz xy)"]
    lines += ["  " + " ".join(f"{value:9.2f}" for value in row) for row in result.constants]
    lines += [
        f"  bulk modulus   Voigt {result.bulk_voigt:8.2f}  Reuss {result.bulk_reuss:8.2f}  "
        f"Hill {result.bulk_hill:8.2f}",
        f"  shear modulus  Voigt {result.shear_voigt:8.2f}  Reuss {result.shear_reuss:8.2f}  "
        f"Hill {result.shear_hill:8.2f}",
        f"  Young's modulus {result.young:.2f}, Poisson's ratio {result.poisson:.3f}",
        "  mechanically stable (Born: every eigenvalue of C positive)"
        if result.stable
        else "  mechanically UNSTABLE: C has a non-positive eigenvalue",
    ]
    return "\n".join(lines)
