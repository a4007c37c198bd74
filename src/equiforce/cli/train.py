"""``equiforce train CONFIG.yaml [--resume]``: parse the config, call ``equiforce.train.train``."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from equiforce.precision import MODES as PRECISION_MODES
from equiforce.train.config import RunConfig, load_config
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
    parser.add_argument(
        "--precision",
        default=None,
        choices=list(PRECISION_MODES),
        help="precision mode (overrides precision.mode of the config); see docs/precision.md",
    )


def run(args: argparse.Namespace) -> int:
    """Train as configured; prints where the outputs are. Returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        with logging_redirect_tqdm():  # log lines go above the progress bars, not through them
            result = train(_config(args), resume=args.resume)
    except (NonFiniteLossError, FileExistsError) as err:
        print(f"equiforce train: error: {err}", file=sys.stderr)
        return 1
    metrics = result.final_metrics
    print(
        f"{result.stop_reason}: {result.epochs_completed} epochs, best epoch {result.best_epoch}; "
        f"last validation RMSE E {metrics.get('valid_energy_rmse', float('nan')):.3f} meV/atom, "
        f"F {metrics.get('valid_forces_rmse', float('nan')):.3f} meV/Å"
    )
    print(f"model: {result.model_path}\nmetrics: {result.metrics_csv}")
    return 0


def _config(args: argparse.Namespace) -> RunConfig:
    """The run file's configuration, with ``--precision`` applied."""
    config = load_config(args.config)
    if args.precision is None:
        return config
    values = config.to_dict()
    values["precision"] = {**values["precision"], "mode": args.precision}
    return RunConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m equiforce.cli.train``)."""
    parser = argparse.ArgumentParser(prog="equiforce train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
