"""``equiforce distill CONFIG.yaml [--sweep] [--resume]``: parse, call ``distill``."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from equiforce.cli.options import add_set_option
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


def run(args: argparse.Namespace) -> int:
    """Distil as configured; prints the report table. Returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = load_distill_config(args.config, args.overrides)
    try:
        with logging_redirect_tqdm():
            result = distill(config, sweep=args.sweep, resume=args.resume)
    except (NonFiniteLossError, FileExistsError) as err:
        print(f"equiforce distill: error: {err}", file=sys.stderr)
        return 1
    print(format_table(result.rows))
    print(f"report: {result.report_md} ({result.report_json})")
    if result.pareto_png is not None:
        print(f"Pareto plot: {result.pareto_png} ({result.pareto_json})")
    return 0
