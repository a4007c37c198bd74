"""What ``compile_potential`` gains on CPU: eager vs compiled, inference and training step.

``inference``'s runner with a second equiforce variant, ``compiled``
(``equiforce.models.compile.compile_potential``, Inductor), interleaved call by call with the
eager model in its own worker: per (preset, call kind) the median ms of both, their ratio
(the report's ``compiled`` time ratio is compiled / eager: below 1, compile helps), the
compiled worker's first call (trace + compile, ``first_call_ms``) and the compiled forces'
largest deviation from eager. No peers by default. ``--compile-backend aot_eager`` traces
without generating code (a quick check of the plumbing).

    python -m benchmarks.allegro_compile --presets mace-small mace-128-l1 allegro-small \\
        allegro-big --systems molecule --threads 2 --warmup 1 --repeats 6
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.inference import run
from equiforce.workflows.bench.options import Variant


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")


def main(argv: list[str] | None = None) -> int:
    """Eager against compiled (see the module docstring)."""
    return run(
        argv,
        "benchmarks.allegro_compile",
        __doc__.split("\n\n")[0],
        variants=lambda args: (
            Variant("compiled", compile=True, compile_backend=args.compile_backend),
        ),
        options=_options,
        presets=("allegro-small", "mace-128-l1"),
        dtypes=("float32",),
        systems=("batch64",),
        kinds=("inference", "train"),
        peers=False,
        warmup=1,
        box_warmup=1,
    )


if __name__ == "__main__":
    sys.exit(main())
