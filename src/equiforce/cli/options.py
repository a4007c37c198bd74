"""Command-line options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
from typing import Sequence

from equiforce.precision import MODES as PRECISION_MODES


def add_precision_option(
    parser: argparse.ArgumentParser,
    doing: str = "run the model in this precision mode (default: as saved)",
) -> None:
    """``--precision MODE`` (None: the model file's saved policy).

    Args:
        parser: the subcommand's parser.
        doing: what the mode applies to, the start of the help text.
    """
    parser.add_argument(
        "--precision",
        default=None,
        choices=list(PRECISION_MODES),
        help=f"{doing}; see docs/precision.md",
    )


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY.PATH=VALUE`` (repeatable): overrides of the config file's values
    (``equiforce.typed_config.apply_overrides``)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        dest="overrides",
        help="override a value of the config file, e.g. --set training.lr=0.01 --set "
        "model.num_channels=64 (VALUE read as YAML; repeatable; checked like the file)",
    )


def add_state_key_options(parser: argparse.ArgumentParser) -> None:
    """``--total-charge-key`` and ``--total-spin-key``: where the frames of a labelled file
    keep their net charge and spin multiplicity (``KeySpec``'s fields)."""
    parser.add_argument(
        "--total-charge-key",
        default="charge",
        help="the frames' net charge (info key; default charge; absent: 0)",
    )
    parser.add_argument(
        "--total-spin-key",
        default="spin",
        help="the frames' spin multiplicity 2S+1 (info key; default spin; absent: 1)",
    )


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """``--charge Q`` and ``--spin S``: the structures' net charge and spin multiplicity, for
    a model that conditions on them (MACE ``embedding_specs``), where the input file cannot
    say (extxyz: ``charge=-1 spin=2`` on the comment line, read into ``atoms.info``)."""
    parser.add_argument(
        "--charge",
        type=float,
        default=None,
        help="the structures' net charge, e (atoms.info['charge']; default: the file's, else 0)",
    )
    parser.add_argument(
        "--spin",
        type=float,
        default=None,
        help="their spin multiplicity 2S+1 (atoms.info['spin']; default: the file's, else 1)",
    )


def apply_state_options(args: argparse.Namespace, structures: Sequence) -> None:
    """Write ``--charge`` / ``--spin`` (where given) into every structure's ``info``, over
    what its file said (``add_state_options``).

    Raises:
        ValueError: a ``--spin`` below 1 (it is the multiplicity 2S + 1).
    """
    if args.spin is not None and args.spin < 1:
        raise ValueError(f"--spin {args.spin:g}: the spin multiplicity 2S+1, >= 1 (doublet: 2)")
    given = {"charge": args.charge, "spin": args.spin}
    for atoms in structures:
        atoms.info.update({key: value for key, value in given.items() if value is not None})


def add_batch_atoms_option(parser: argparse.ArgumentParser) -> None:
    """``--max-batch-atoms N`` (5000): the most atoms of one TorchSim batch (``--batched``)."""
    parser.add_argument(
        "--max-batch-atoms",
        type=int,
        default=5000,
        metavar="N",
        help="with --batched: the most atoms of one model call (structures are grouped in "
        "input order; a larger one runs alone): bounds memory; raise it on a GPU (5000)",
    )


def add_device_option(
    parser: argparse.ArgumentParser, choices: tuple[str, ...] | None = None
) -> None:
    """``--device DEVICE`` (default ``cpu``), checked while the command line is parsed.

    Args:
        parser: the subcommand's parser.
        choices: the devices the command supports (None: any torch device, e.g. ``cuda:1``).
    """
    parser.add_argument(
        "--device",
        default="cpu",
        type=_torch_device,
        choices=choices,
        help="torch device: " + (", ".join(choices) if choices else "cpu, cuda or cuda:N"),
    )


def _torch_device(text: str) -> str:
    """``text`` if torch parses it as a device, else an argparse error naming the value."""
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    return text


def add_dispersion_option(parser: argparse.ArgumentParser) -> None:
    """``--dispersion DAMPING`` and ``--dispersion-xc XC``: Grimme's D3 added to the model
    (``equiforce.md.dispersion``; None: the model alone)."""
    from equiforce.md.dispersion import DAMPINGS

    parser.add_argument(
        "--dispersion",
        choices=DAMPINGS,
        default=None,
        help="add Grimme's D3 dispersion with this damping (d3bj: Becke-Johnson), for a model "
        "trained without it (MACE-MP: PBE)",
    )
    parser.add_argument(
        "--dispersion-xc",
        default="PBE",
        help="the functional whose D3 parameters apply: the model's training data's (PBE)",
    )


def add_calculator_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--dispersion`` / ``--dispersion-xc``: what
    ``model_calculator`` builds the calculator from."""
    add_device_option(parser)
    add_precision_option(parser)
    add_dispersion_option(parser)


def model_calculator(args: argparse.Namespace, **options):
    """The ``EquiforceCalculator`` of ``args.model`` on ``args.device`` in ``args.precision``
    (``options``: more of its arguments), with ``args.dispersion`` the D3-corrected one; a
    ``CommitteeCalculator`` when ``args.model`` lists several files or a committee folder.

    Raises:
        ValueError: ``options`` or ``--dispersion`` with a committee (it runs its members
            eagerly, without D3).
    """
    from pathlib import Path

    models = args.model if isinstance(args.model, list) else [args.model]
    dispersion = getattr(args, "dispersion", None)
    if len(models) > 1 or Path(models[0]).is_dir():
        from equiforce.md.committee import CommitteeCalculator

        if options.get("compile"):
            raise ValueError("--compile runs one model; a committee runs its members eagerly")
        if dispersion is not None:
            raise ValueError("--dispersion adds D3 to one model, not to a committee")
        return CommitteeCalculator.from_paths(models, device=args.device, precision=args.precision)
    from equiforce.md.calculator import EquiforceCalculator

    calculator = EquiforceCalculator(
        models[0], device=args.device, precision=args.precision, **options
    )
    if dispersion is None:
        return calculator
    from equiforce.md.dispersion import DispersionCorrected

    return DispersionCorrected(calculator, xc=args.dispersion_xc, damping=dispersion)
