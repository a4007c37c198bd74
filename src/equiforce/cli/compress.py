"""``equiforce compress MODEL --data TRAIN.xyz --force-tol X ...``: parse, call ``compress``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from equiforce.precision import MODES

TARGET_HELP = (
    "system timed: md-molecule (the first training structure), md-box (it replicated into a "
    "periodic box), batch (many training structures as one batch)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``compress`` subcommand."""
    from equiforce.workflows.compress.config import TARGETS

    parser.add_argument("model", help="the input equiforce model file (teacher of the students)")
    parser.add_argument("--data", required=True, help="labelled training structures (extxyz)")
    parser.add_argument("--valid", default=None, help="validation structures (default: held out)")
    parser.add_argument("--test", default=None, help="test structures (reported, never chosen on)")
    parser.add_argument("--isolated-atoms", default=None, help="E0s for the students (extxyz)")
    parser.add_argument("--force-tol", type=float, required=True, help="valid force RMSE, meV/Å")
    parser.add_argument("--energy-tol", type=float, default=None, help="valid E RMSE, meV/atom")
    parser.add_argument("--target", choices=TARGETS, default="md-molecule", help=TARGET_HELP)
    parser.add_argument("--budget-s", type=float, default=3600.0, help="search wall time, s")
    parser.add_argument("--out", default="compress_out", help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue a killed search")
    parser.add_argument("--plan", action="store_true", help="print the search and its estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="most torch threads tried")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--backends", nargs="+", default=["reference", "fast"], help="kernel backends timed"
    )
    parser.add_argument("--no-compile", action="store_true", help="no torch.compile variants")
    parser.add_argument("--no-export", action="store_true", help="no exported variants")
    parser.add_argument(
        "--ladder", default=None, help="student rungs as JSON, e.g. '[{\"num_channels\": 16}]'"
    )
    parser.add_argument("--student-epochs", type=int, default=None, help="cap per student")
    parser.add_argument(
        "--student-training", default="{}", help="JSON overrides of the students' training"
    )
    parser.add_argument("--augment", default="{}", help="JSON distillation augment section")
    parser.add_argument("--md-steps", type=int, default=100, help="NVE steps of the audit")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also time the input's weights in mace-torch / nequip-allegro (its family's peer)",
    )
    parser.add_argument("--mace-python", default=None, help="python of the mace-torch venv")
    parser.add_argument("--nequip-python", default=None, help="python of the nequip venv")


def config_from_args(args: argparse.Namespace):
    """The ``CompressConfig`` of parsed arguments."""
    from equiforce.workflows.compress import CompressConfig

    return CompressConfig(
        model=args.model,
        train_file=args.data,
        valid_file=args.valid,
        test_file=args.test,
        isolated_atoms_file=args.isolated_atoms,
        force_tol=args.force_tol,
        energy_tol=args.energy_tol,
        target=args.target,
        budget_s=args.budget_s,
        out=args.out,
        seed=args.seed,
        threads=args.threads,
        modes=tuple(args.modes),
        backends=tuple(args.backends),
        compile=not args.no_compile,
        export=not args.no_export,
        ladder=None if args.ladder is None else json.loads(args.ladder),
        student_epochs=args.student_epochs,
        student_training=json.loads(args.student_training),
        augment=json.loads(args.augment),
        md_steps=args.md_steps,
        repeats=args.repeats,
        peer=args.peer,
        peer_python={
            name: python
            for name, python in (
                ("mace-torch", args.mace_python),
                ("nequip-allegro", args.nequip_python),
            )
            if python is not None
        },
    )


def run(args: argparse.Namespace) -> int:
    """Print the plan (``--plan``) or run the search; prints the choice. Exit status."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from equiforce.workflows.compress import CompressRefused, compress, plan

    config = config_from_args(args)
    if args.plan:
        print(plan(config)[1])
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        with logging_redirect_tqdm():
            result = compress(config, resume=args.resume)
    except (CompressRefused, FileExistsError) as err:
        print(f"equiforce compress: refused: {err}", file=sys.stderr)
        return 1
    chosen = result.chosen
    speedup = "" if chosen.get("speedup") is None else f", {chosen['speedup']:.2f}x the input"
    print(f"chosen: {chosen['name']} ({chosen['ms_per_call']:.3g} ms per call{speedup})")
    print(
        f"model: {result.model_path}"
        + (f", package: {result.package_path}" if result.package_path else "")
    )
    print(
        f"report: {result.reports['markdown']} ({result.reports['json']}, {result.reports['plot']})"
    )
    return 0
