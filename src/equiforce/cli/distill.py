"""``equiforce distill CONFIG.yaml [--sweep] [--resume]``: parse, call ``distill``.

On several ranks: ``torchrun --nproc_per_node N -m equiforce distill CONFIG.yaml`` (the
teacher's work shared out, the students trained data-parallel; docs/distillation.md); ranks
other than 0 log warnings only and print nothing on success.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from equiforce.cli.options import add_set_option
from equiforce.train.distributed import (
    DEFAULT_TIMEOUT_S,
    RankFailure,
    launched_rank,
    launched_ranks,
)
from equiforce.train.trainer import NonFiniteLossError
from equiforce.workflows.distill import distill, load_distill_config
from equiforce.workflows.distill.report import format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``distill`` subcommand."""
    parser.add_argument("config", help="YAML distillation file (see configs/distill_example.yaml)")
    add_set_option(parser)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="train every student of sweep.students and draw the Pareto plot",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted student runs (labels are always reused from the cache)",
    )
    parser.add_argument(
        "--distributed-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="under torchrun: seconds a rank waits for the others in a collective (keep it "
        "above the time the teacher's work can differ between ranks; default "
        f"{DEFAULT_TIMEOUT_S:g})",
    )


def run(args: argparse.Namespace) -> int:
    """Distil as configured; prints the report table. Returns the exit status."""
    rank = launched_rank()
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    where = f" (rank {rank} of {launched_ranks()})" if launched_ranks() > 1 else ""
    config = load_distill_config(args.config, args.overrides)
    try:
        with logging_redirect_tqdm():
            result = distill(
                config,
                sweep=args.sweep,
                resume=args.resume,
                distributed_timeout_s=args.distributed_timeout,
            )
    except (NonFiniteLossError, FileExistsError, RankFailure) as err:
        print(f"equiforce distill{where}: error: {err}", file=sys.stderr)
        return 1
    if result is None:  # a rank other than 0
        return 0
    print(format_table(result.rows))
    print(f"report: {result.report_md} ({result.report_json})")
    if result.pareto_png is not None:
        print(f"Pareto plot: {result.pareto_png} ({result.pareto_json})")
    return 0
