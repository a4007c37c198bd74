"""Command-line options that several subcommands share, defined once."""

from __future__ import annotations

import argparse

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
