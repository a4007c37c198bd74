"""``equiforce`` command line: thin subcommands over library calls."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from equiforce.allocator import retain_freed_memory
from equiforce.process_exit import exit_process

# subcommand -> (module exposing add_arguments(parser) and run(args), one-line help)
SUBCOMMANDS = {
    "quickstart": ("equiforce.cli.quickstart", "generate data, train, evaluate and run MD"),
    "train": ("equiforce.cli.train", "train a model from a YAML config"),
    "preprocess": (
        "equiforce.cli.preprocess",
        "extxyz -> memory-mapped on-disk dataset (neighbour lists, statistics) for training",
    ),
    "evaluate": ("equiforce.cli.evaluate", "errors of a model on a labelled extxyz file"),
    "md": ("equiforce.cli.md", "molecular dynamics with a model (ASE)"),
    "relax": (
        "equiforce.cli.relax",
        "relax structures (positions, cells under pressure), one by one or batched (TorchSim)",
    ),
    "phonons": (
        "equiforce.cli.phonons",
        "phonon dispersion and density of states of a crystal (exact supercell Hessian)",
    ),
    "qha": (
        "equiforce.cli.qha",
        "quasi-harmonic thermal expansion of a crystal (phonons at several volumes)",
    ),
    "eos": (
        "equiforce.cli.eos",
        "equation of state of a crystal: E(V) relaxed at each volume, V0, B0, B0'",
    ),
    "elastic": (
        "equiforce.cli.elastic",
        "elastic constants, bulk and shear moduli of a crystal (strained cells, relaxed ions)",
    ),
    "vibrations": (
        "equiforce.cli.vibrations",
        "normal modes, zero-point energy and thermochemistry of a molecule, adsorbate or "
        "transition state (exact Hessian)",
    ),
    "saddle": (
        "equiforce.cli.saddle",
        "a transition state from a guess (P-RFO on the exact Hessian), checked by its vibrations",
    ),
    "neb": (
        "equiforce.cli.neb",
        "minimum energy path and barrier between two structures (climbing-image NEB, the "
        "band in one model call per step)",
    ),
    "ipi": (
        "equiforce.cli.ipi",
        "serve i-PI (path-integral MD, replica exchange, ...) with the model's forces",
    ),
    "lammps": (
        "equiforce.cli.lammps",
        "run a LAMMPS input with pair_style equiforce (mpirun -np N for N domains)",
    ),
    "convert": (
        "equiforce.cli.convert",
        "a mace-torch or nequip-allegro model file as an equiforce model file",
    ),
    "export": (
        "equiforce.cli.export",
        "compile a model into a .pt2 package that runs without equiforce",
    ),
    "bench": ("equiforce.cli.bench", "inference speed and memory, optionally against the peers"),
    "distill": (
        "equiforce.cli.distill",
        "distil a teacher (model or ASE calculator) into a fast student",
    ),
    "committee": (
        "equiforce.cli.committee",
        "train N models of a run file (seeds, subsets) for uncertainty",
    ),
    "calibrate": (
        "equiforce.cli.calibrate",
        "fit a committee's uncertainty scale on validation data (stored in committee.json)",
    ),
    "learn": (
        "equiforce.cli.learn",
        "active learning: MD with a committee, label uncertain frames, fine-tune, repeat",
    ),
    "precision-audit": (
        "equiforce.cli.precision_audit",
        "accuracy, speed and symmetry of every precision mode for a model",
    ),
    "compress": (
        "equiforce.cli.compress",
        "the fastest model within a force tolerance (backends, compile, export, precision, "
        "distilled students)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="equiforce", description="Fast E(3)-equivariant interatomic potentials."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equiforce`` script; returns the exit status."""
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # steps reuse their freed pages instead of faulting them in again
    try:
        status = args.run(args)
    except (FileNotFoundError, ImportError, ValueError, KeyError) as err:
        print(f"equiforce {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


def script() -> NoReturn:
    """The ``equiforce`` console script and ``python -m equiforce``: ``main()`` on the
    command line's arguments, then the process ends (``exit_process``: without its final
    garbage collection)."""
    exit_process(main())


if __name__ == "__main__":
    script()
