"""The crystal of the property commands (``phonons``, ``elastic``, ``eos``, ``qha``): their
common arguments, and the crystal read, with its calculator, relaxed first with ``--relax``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ase import Atoms


def add_crystal_arguments(parser: argparse.ArgumentParser, relaxed_as: str) -> None:
    """The model, the crystal, ``--relax`` (the relaxed crystal ``relaxed_as``),
    ``--device``, ``--precision`` and ``--dispersion``."""
    from equiforce.cli.options import add_calculator_options

    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument("crystal", help="the crystal, any ASE format (its first frame); relaxed")
    parser.add_argument(
        "--relax",
        action="store_true",
        help="relax the crystal first: positions and cell at 0 GPa keeping its space group "
        f"(BFGS, fmax 1e-4 eV/Å), written {relaxed_as}",
    )
    add_calculator_options(parser)


def add_phonon_arguments(parser: argparse.ArgumentParser, mesh: int, mesh_for: str) -> None:
    """``--supercell`` (the force constants' repetitions, 3 3 3) and ``--mesh`` (``mesh``
    wave vectors along each axis, for ``mesh_for``)."""
    parser.add_argument(
        "--supercell",
        type=int,
        nargs=3,
        default=(3, 3, 3),
        metavar=("N1", "N2", "N3"),
        help="repetitions of the cell for the force constants (3 3 3)",
    )
    parser.add_argument(
        "--mesh",
        type=int,
        nargs=3,
        default=(mesh, mesh, mesh),
        metavar=("Q1", "Q2", "Q3"),
        help=f"wave vectors of {mesh_for} ({mesh} {mesh} {mesh})",
    )


def add_volume_arguments(
    parser: argparse.ArgumentParser, volumes: int, volume_range: float
) -> None:
    """``--volumes`` and ``--volume-range``: the volumes sampled around the crystal's
    (``equiforce.md.eos.volume_ratios``)."""
    parser.add_argument("--volumes", type=int, default=volumes, help=f"volumes sampled ({volumes})")
    percent = f"{volume_range:.0%}".replace("%", "%%")  # argparse formats help with %
    parser.add_argument(
        "--volume-range",
        type=float,
        default=volume_range,
        help=f"largest relative volume change sampled ({volume_range}: -{percent} to +{percent})",
    )


def read_crystal(path: str) -> Atoms:
    """The first frame of ``path`` (any ASE format).

    Raises:
        FileNotFoundError: no such file.
    """
    from ase.io import read

    if not Path(path).exists():
        raise FileNotFoundError(f"crystal file {path} does not exist")
    return read(path, index=0)


def relax_and_write(crystal: Atoms, calculator, path: Path) -> Atoms:
    """``--relax`` (``equiforce.md.relax.relaxed_crystal``): the relaxed crystal, also
    written to ``path``, the relaxation printed."""
    from ase.io import write

    from equiforce.md.relax import relaxed_crystal

    result = relaxed_crystal(crystal, calculator)
    write(path, result.atoms)
    print(
        f"relaxed in {result.n_steps} steps ({result.spacegroup}), fmax {result.fmax:.1e} "
        f"eV/Å: {path}"
    )
    return result.atoms


def crystal_and_calculator(args: argparse.Namespace, relaxed_path: Path):
    """The crystal of ``args.crystal`` and the model's ``EquiforceCalculator``; with
    ``args.relax`` the crystal relaxed first (``relax_and_write`` to ``relaxed_path``, whose
    folder is created).

    Raises:
        FileNotFoundError: no such crystal file.
        RuntimeError: a relaxation that did not converge.
    """
    from equiforce.cli.options import model_calculator

    crystal = read_crystal(args.crystal)
    calculator = model_calculator(args)
    relaxed_path.parent.mkdir(parents=True, exist_ok=True)
    if args.relax:
        crystal = relax_and_write(crystal, calculator, relaxed_path)
    return crystal, calculator
