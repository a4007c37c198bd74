"""``equiforce precision-audit MODEL DATA.xyz``: accuracy and speed of every precision mode."""

from __future__ import annotations

import argparse

from equiforce.cli.options import add_device_option
from equiforce.precision import MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``precision-audit`` options on ``parser``."""
    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument("data", help="extended XYZ file (labels optional)")
    parser.add_argument(
        "--force-tol", type=float, default=1.0, help="max force RMS deviation, meV/Å"
    )
    parser.add_argument(
        "--energy-tol", type=float, default=1.0, help="max energy RMS deviation, meV/atom"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="modes to audit"
    )
    parser.add_argument("--max-structures", type=int, default=100, help="first N frames")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per mode")
    parser.add_argument("--md-steps", type=int, default=200, help="NVE steps (0: no MD)")
    parser.add_argument("--timestep", type=float, default=0.5, help="NVE time step, fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="NVE start, K")
    parser.add_argument("--seed", type=int, default=0, help="rotation and velocity seed")
    add_device_option(parser)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the audit as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the audit, print the table, write the JSON when asked."""
    from equiforce.data.extxyz import read_configurations
    from equiforce.models import load_model
    from equiforce.workflows.precision_audit import (
        AuditOptions,
        audit_to_json,
        format_audit_table,
        run_audit,
    )

    if args.max_structures < 1:
        raise ValueError(f"--max-structures must be >= 1, got {args.max_structures}")
    model = load_model(args.model, map_location=args.device)
    structures = read_configurations(args.data, index=f":{args.max_structures}")
    options = AuditOptions(
        modes=tuple(args.modes),
        force_tol=args.force_tol,
        energy_tol=args.energy_tol,
        batch_size=args.batch_size,
        timing_repeats=args.repeats,
        md_steps=args.md_steps,
        md_timestep_fs=args.timestep,
        md_temperature_K=args.temperature,
        seed=args.seed,
        device=args.device,
    )
    result = run_audit(model, structures, options)
    print(format_audit_table(result))
    if args.json:
        audit_to_json(result, args.json)
        print(f"audit written to {args.json}")
    return 0
