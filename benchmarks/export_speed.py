"""Small-molecule MD step time: eager vs compiled vs the exported ``.pt2`` package vs the peer.

``inference``'s runner with two further equiforce variants, interleaved call by call with the
eager model (its own kernel backend, ``auto``) and the peer framework on the same weights
(mace-torch for MACE, nequip-allegro for Allegro, each in its own venv; ``--no-peers`` leaves
it out), each in its own worker: ``compiled`` (``compile_potential``, Inductor) and
``exported`` (``equiforce.export``: the AOTInductor package traced with ``--export-backend``,
default ``fast``, loaded and called as ``EquiforceCalculator`` calls it). One AcAc molecule
(15 atoms), energy + forces, one thread. The workers' start includes the compile and the
export (minutes for mace-128-l1 on one thread). The bench reports wall times; on shared cores
compare the ratios of one run.

    python -m benchmarks.export_speed --presets mace-128-l1 --dtypes float32 float64 \\
        --no-compiled --threads 1 --warmup 3 --repeats 30
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.inference import run
from equiforce.workflows.bench.options import Variant


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--export-backend",
        default="fast",
        choices=("reference", "fast"),
        help="kernel backend traced into the package (fast: MACE's via kernels.export_ops)",
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
        peers=True,
        threads=1,
        warmup=3,
        repeats=30,
    )


if __name__ == "__main__":
    sys.exit(main())
