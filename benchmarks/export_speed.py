"""Small-molecule MD step time: eager vs compiled vs the exported ``.pt2`` package.

``inference``'s runner with two further equiforce variants, interleaved call by call with the
eager model (its own kernel backend, ``auto``) in their own workers: ``compiled``
(``compile_potential``, Inductor) and ``exported`` (``equiforce.export``: the AOTInductor
package traced with ``--export-backend``, loaded and called as ``EquiforceCalculator`` calls
it). One AcAc molecule (15 atoms), energy + forces, one thread. The workers' start includes the
compile and the export (minutes for mace-128-l1 on one thread).

    python -m benchmarks.export_speed --presets mace-128-l1 allegro-small --dtypes float32 \\
        float64 --threads 1 --warmup 3 --repeats 30
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.inference import run
from equiforce.workflows.bench.options import Variant


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--export-backend",
        default="reference",
        choices=("reference", "fast"),
        help="kernel backend traced into the package (fast: Allegro only)",
    )
    parser.add_argument(
        "--compiled", action=argparse.BooleanOptionalAction, default=True, help="Inductor variant"
    )


def main(argv: list[str] | None = None) -> int:
    """Eager against compiled and exported (see the module docstring)."""
    return run(
        argv,
        "benchmarks.export_speed",
        __doc__.split("\n\n")[0],
        variants=lambda args: (
            *((Variant("compiled", compile=True),) if args.compiled else ()),
            Variant("exported", export_backend=args.export_backend),
        ),
        options=_options,
        presets=("mace-128-l1", "allegro-small"),
        dtypes=("float32", "float64"),
        systems=("molecule",),
        kinds=("inference",),
        peers=False,
        threads=1,
        warmup=3,
        repeats=30,
    )


if __name__ == "__main__":
    sys.exit(main())
