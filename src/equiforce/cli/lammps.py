"""``equiforce lammps in.lmp``: run a LAMMPS input with ``pair_style equiforce`` (any ranks).

Under ``mpirun -np N equiforce lammps in.lmp`` every rank runs this command and LAMMPS splits
the box into N domains (docs/lammps.md).
"""

from __future__ import annotations

import argparse
import sys

from equiforce.cli.options import add_device_option, add_precision_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``lammps`` options on ``parser``."""
    parser.add_argument("input", help="LAMMPS input file (pair_style equiforce MODEL)")
    add_device_option(parser)
    add_precision_option(parser, "run the models in this precision mode (default: as saved)")
    parser.add_argument(
        "--var",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="define a LAMMPS variable (as lmp -var NAME VALUE); repeatable",
    )
    parser.add_argument("--log", default="log.lammps", help="LAMMPS log file ('none': no log)")


def run(args: argparse.Namespace) -> int:
    """Run the input; LAMMPS's own errors are printed and give exit status 1."""
    from equiforce.lammps.driver import LammpsError, run_lammps

    variables = dict(args.var)
    try:
        run_lammps(args.input, args.device, args.precision, variables, args.log, finalize=True)
    except LammpsError as err:
        print(f"equiforce lammps: error: {err}", file=sys.stderr)
        return 1
    return 0
