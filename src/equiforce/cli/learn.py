"""``equiforce learn CONFIG.yaml [--max-rounds N]``: parse the config, call ``learn``.

A rerun of the same command continues where a killed run stopped (finished rounds are kept,
labels come from the cache); ``--max-rounds`` may raise the limit of a finished loop.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from equiforce.cli.options import add_set_option
from equiforce.train.trainer import NonFiniteLossError
from equiforce.workflows.learn import learn, load_learn_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``learn`` subcommand."""
    parser.add_argument("config", help="YAML learn file (see configs/learn_example.yaml)")
    add_set_option(parser)
    parser.add_argument("--max-rounds", type=int, default=None, help="as --set max_rounds=N")


def run(args: argparse.Namespace) -> int:
    """Run or continue the loop; prints one line per round. Returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rounds = [] if args.max_rounds is None else [f"max_rounds={args.max_rounds}"]
    config = load_learn_config(args.config, [*args.overrides, *rounds])
    try:
        with logging_redirect_tqdm():
            result = learn(config, progress=sys.stderr.isatty())
    except NonFiniteLossError as err:
        print(f"equiforce learn: error: {err}", file=sys.stderr)
        return 1
    for record in result.rounds[1:]:
        print(
            f"round {record['round']}: {record['md']['n_steps']} MD steps, "
            f"{record['n_flagged']} uncertain frames (largest spread "
            f"{1e3 * record['max_force_uncertainty']:.0f} meV/Å), "
            f"{record['n_train_frames']} training frames"
        )
    state = "converged" if result.converged else "not converged (max_rounds reached)"
    print(f"{state}; committee: {', '.join(map(str, result.models))}")
    print(f"report: {result.report} ({result.figure})")
    return 0
