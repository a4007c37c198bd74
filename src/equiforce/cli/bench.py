"""``equiforce bench MODEL|--preset NAME``: inference speed and memory, optionally vs peers."""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench`` options on ``parser``."""
    from equiforce.models.presets import PRESETS
    from equiforce.workflows.bench.systems import DEFAULT_SYSTEMS

    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="equiforce model file, or an exported .pt2 package (timed as exported: "
        "--precision, --backend, --compile, --exported and --peers do not apply)",
    )
    parser.add_argument(
        "--preset", default=None, help=f"random-weight model instead: {', '.join(PRESETS)}"
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        default=None,
        help="molecule, batchN (N rattled copies in one batch), box-N (water box, ~N atoms), "
        "fcc-N (fcc Al box, ~N atoms, for the -al presets); "
        f"default: {' '.join(DEFAULT_SYSTEMS)} (a .pt2 package, one structure per call: "
        "without the batches)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="float32 (default), float64 or a precision mode (a package: as exported)",
    )
    parser.add_argument("--backend", default=None, help="kernel backend for equiforce")
    parser.add_argument("--compile", action="store_true", help="torch.compile equiforce's model")
    parser.add_argument(
        "--exported",
        default=None,
        choices=("reference", "fast"),
        metavar="BACKEND",
        help="also time the model's exported .pt2 package (equiforce export), traced with this "
        "kernel backend (reference; fast: Allegro only); inference only",
    )
    parser.add_argument(
        "--peers", action="store_true", help="also run mace-torch / nequip-allegro on the weights"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per system")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of preset weights and systems")
    parser.add_argument("--mace-python", default=None, help="python of the mace-torch venv")
    parser.add_argument("--nequip-python", default=None, help="python of the nequip venv")
    parser.add_argument(
        "--out", default=None, help="output folder (default: bench_out/<model>-<time>)"
    )


def default_systems(model: str | None) -> tuple[str, ...]:
    """The systems when ``--systems`` is not given: ``DEFAULT_SYSTEMS``, less the batches of
    several structures for an exported package (it evaluates one structure per call)."""
    from equiforce.workflows.bench.options import is_package
    from equiforce.workflows.bench.systems import DEFAULT_SYSTEMS, parse_system

    if not is_package(model):
        return DEFAULT_SYSTEMS
    return tuple(name for name in DEFAULT_SYSTEMS if parse_system(name)[0] != "batch")


def run(args: argparse.Namespace) -> int:
    """Run the bench, print the table and write ``bench.json`` and ``bench.png``.

    Returns:
        0, or 1 when a system or a peer failed (the report says which and why).
    """
    from equiforce.workflows.bench.options import Variant
    from equiforce.workflows.bench.report import format_table, write_json, write_plot
    from equiforce.workflows.bench.run import BenchConfig, run_bench

    pythons = {"mace-torch": args.mace_python, "nequip-allegro": args.nequip_python}
    options = {"threads": args.threads} if args.threads is not None else {}
    config = BenchConfig(
        model=args.model,
        preset=args.preset,
        systems=tuple(args.systems or default_systems(args.model)),
        precision=args.precision,
        backend=args.backend,
        compile=args.compile,
        variants=(Variant("exported", export_backend=args.exported),) if args.exported else (),
        peers=args.peers,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        seed=args.seed,
        peer_python={k: v for k, v in pythons.items() if v is not None},
        **options,
    )
    label = args.preset or Path(args.model).stem
    out = Path(args.out or f"bench_out/{label}-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    report = run_bench(config, log=lambda line: print(line, flush=True))
    print(format_table(report))
    print(f"report written to {write_json(report, out / 'bench.json')}")
    print(f"plot written to {write_plot(report, out / 'bench.png')}")
    failed = [r["system"] for r in report["results"] if "error" in r or r.get("failed")]
    return 1 if failed else 0
