"""``equiforce quickstart``: generate data, train a small MACE or Allegro, evaluate it, run MD."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the quickstart subcommand."""
    parser.add_argument("--out", type=Path, default=Path("quickstart_out"), help="output folder")
    parser.add_argument(
        "--model", choices=("mace", "allegro"), default="mace", help="architecture to train"
    )
    parser.add_argument("--budget", type=float, default=120.0, help="training budget, s")
    parser.add_argument("--configs", type=int, default=150, help="generated structures")
    parser.add_argument("--md-steps", type=int, default=300, help="NVE steps (1 fs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the quickstart model is too small to gain from "
        "more, and on a busy machine extra OpenMP threads slow it down many-fold)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the quickstart and print its summary."""
    import torch

    from equiforce.workflows.quickstart import QuickstartOptions, run_quickstart, summary_table

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    print(f"equiforce quickstart: {torch.get_num_threads()} torch thread(s), output in {args.out}")

    options = QuickstartOptions(
        out_dir=args.out,
        family=args.model,
        budget_s=args.budget,
        n_configs=args.configs,
        md_steps=args.md_steps,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(summary_table(run_quickstart(options)))
    return 0
