"""``equiforce committee CONFIG.yaml --size N [--subsample F] [--workers W] [--resume]``.

Trains N models of an ordinary run file (the one ``equiforce train`` takes) with seeds
``seed .. seed+N-1`` into ``output_dir/member_<k>/`` and writes ``output_dir/committee.json``;
``equiforce md --model output_dir`` then runs the committee with its uncertainty.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from equiforce.cli.options import add_set_option
from equiforce.train.config import load_config
from equiforce.train.trainer import NonFiniteLossError
from equiforce.workflows.committee import CommitteeConfig, train_committee


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``committee`` subcommand."""
    parser.add_argument("config", help="YAML run file, as for equiforce train")
    add_set_option(parser)
    parser.add_argument("--size", type=int, default=4, help="number of members (default 4)")
    parser.add_argument(
        "--subsample",
        type=float,
        default=None,
        metavar="F",
        help="train each member on a random fraction F of the training file (default: all)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="members trained at the same time (processes)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (default: shared)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip finished members, continue interrupted ones"
    )


def run(args: argparse.Namespace) -> int:
    """Train the committee; prints each member's validation error. Returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    committee = CommitteeConfig(
        size=args.size,
        subsample=args.subsample,
        workers=args.workers,
        threads_per_worker=args.threads,
    )
    config = load_config(args.config, args.overrides)
    try:
        with logging_redirect_tqdm():
            result = train_committee(config, committee, resume=args.resume)
    except (NonFiniteLossError, FileExistsError) as err:
        print(f"equiforce committee: error: {err}", file=sys.stderr)
        return 1
    for member in result.members:
        print(
            f"{member['model']}: seed {member['seed']}, {member['epochs']} epochs, validation "
            f"RMSE E {member['valid_energy_rmse']:.3f} meV/atom, "
            f"F {member['valid_forces_rmse']:.3f} meV/Å"
        )
    print(f"committee: {result.output_dir} ({result.manifest})")
    return 0
