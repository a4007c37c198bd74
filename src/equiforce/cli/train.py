"""``equiforce train CONFIG.yaml [--resume]``: parse the config, call ``equiforce.train.train``.

Data-parallel: ``torchrun --nproc_per_node N -m equiforce train CONFIG.yaml`` (see
``equiforce.train.distributed`` and docs/training.md); ranks other than 0 log warnings only
and print nothing on success.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from equiforce.cli.options import add_precision_option, add_set_option
from equiforce.process_exit import exit_process
from equiforce.train.config import RunConfig, load_config
from equiforce.train.distributed import (
    DEFAULT_TIMEOUT_S,
    RankFailure,
    launched_rank,
    launched_ranks,
)
from equiforce.train.run import train
from equiforce.train.trainer import NonFiniteLossError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``train`` subcommand."""
    parser.add_argument("config", help="YAML run file (see configs/mace_example.yaml)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in output_dir exactly from checkpoints/last.pt",
    )
    add_precision_option(parser, "precision mode (as --set precision.mode=MODE)")
    add_set_option(parser)
    parser.add_argument(
        "--distributed-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="under torchrun: seconds a rank waits for the others in a collective before it "
        f"stops with an error (a dead rank is noticed at once; default {DEFAULT_TIMEOUT_S:g})",
    )


def run(args: argparse.Namespace) -> int:
    """Train as configured; prints where the outputs are. Returns the exit status."""
    rank = launched_rank()
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(message)s")
    where = f" (rank {rank} of {launched_ranks()})" if launched_ranks() > 1 else ""
    try:
        with logging_redirect_tqdm():  # log lines go above the progress bars, not through them
            result = train(
                _config(args), resume=args.resume, distributed_timeout_s=args.distributed_timeout
            )
    except (NonFiniteLossError, FileExistsError, RankFailure) as err:
        print(f"equiforce train{where}: error: {err}", file=sys.stderr)
        return 1
    if rank != 0:
        return 0
    metrics = result.final_metrics
    print(
        f"{result.stop_reason}: {result.epochs_completed} epochs, best epoch {result.best_epoch}; "
        f"last validation RMSE E {metrics.get('valid_energy_rmse', float('nan')):.3f} meV/atom, "
        f"F {metrics.get('valid_forces_rmse', float('nan')):.3f} meV/Å"
    )
    print(f"model: {result.model_path}\nmetrics: {result.metrics_csv}")
    return 0


def _config(args: argparse.Namespace) -> RunConfig:
    """The run file's configuration, with ``--set`` and ``--precision`` applied."""
    precision = [] if args.precision is None else [f"precision.mode={args.precision}"]
    return load_config(args.config, [*args.overrides, *precision])


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m equiforce.cli.train``)."""
    parser = argparse.ArgumentParser(prog="equiforce train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    exit_process(main())
