"""``equiforce ipi MODEL STRUCTURE``: serve an i-PI simulation (path-integral MD and i-PI's
other methods) with the model's energies, forces and virials (``equiforce.md.ipi``).

Start i-PI with an ``<ffsocket>`` (``mode='unix'`` and an ``<address>``, or ``mode='inet'``
and a port), then this command with the same address; it returns when i-PI ends the run.
``STRUCTURE`` gives the species in i-PI's atom order (the file i-PI starts from).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``ipi`` options on ``parser``."""
    from equiforce.cli.options import add_calculator_options, add_state_options

    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument(
        "structure",
        help="i-PI's starting structure, any ASE format: the species and their order, the pbc",
    )
    parser.add_argument(
        "--unix",
        default=None,
        metavar="NAME",
        help="i-PI's UNIX socket address (its <address> with mode='unix'); default: inet",
    )
    parser.add_argument("--host", default="localhost", help="i-PI's host (mode='inet')")
    parser.add_argument("--port", type=int, default=31415, help="i-PI's port (31415)")
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for i-PI to start (60)"
    )
    parser.add_argument("--log", action="store_true", help="print the socket protocol's messages")
    add_calculator_options(parser)
    add_state_options(parser)


def run(args: argparse.Namespace) -> int:
    """Serve i-PI until it ends; returns the exit code.

    Raises:
        FileNotFoundError: no such structure file.
        ConnectionError: no i-PI at the address within ``--wait`` seconds.
    """
    from ase.io import read

    from equiforce.cli.options import apply_state_options, model_calculator
    from equiforce.md.ipi import run_ipi_driver

    if not Path(args.structure).exists():
        raise FileNotFoundError(f"structure file {args.structure} does not exist")
    template = read(args.structure, index=0)
    apply_state_options(args, [template])
    calculator = model_calculator(args)
    evaluations = run_ipi_driver(
        template,
        calculator,
        unix=args.unix,
        host=args.host,
        port=args.port,
        wait_s=args.wait,
        log=sys.stdout if args.log else None,
    )
    print(f"i-PI ended the run: {evaluations} structures evaluated")
    return 0
