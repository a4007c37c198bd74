"""MACE in receiver chunks vs one pass: time and peak memory against atom count.

``allegro_scaling``'s runner with the MACE scaling model ``mace-128-l1-al`` (the issue's MACE,
128 channels, L = 1, correlation 3, 2 layers, max_ell 3, r_max 5 Å; ~35 edges per atom in the
fcc boxes): ours as built (``MACE.chunk_edges`` = 16,384, recomputed chunks above 4 x that
many edges) and, interleaved in their own workers, every ``--chunk-edges`` setting (0: one
pass), with the parity of each against ours. 1 thread, one timed call per box by default.

    python -m benchmarks.mace_chunking --reps 9 --chunk-edges 0 8192 32768 65536 --repeats 3
    python -m benchmarks.mace_chunking --reps 6 9 14 29 --repeats 1 --warmup 0 --max-peak-gb 14
"""

from __future__ import annotations

import sys

from benchmarks.allegro_scaling import run


def main(argv: list[str] | None = None) -> int:
    """MACE chunk settings on growing fcc boxes (see the module docstring)."""
    return run(
        argv,
        "benchmarks.mace_chunking",
        __doc__.split("\n\n")[0],
        preset="mace-128-l1-al",
        reps=(6, 9, 14),
        threads=1,
        warmup=0,
        repeats=2,
        max_peak_gb=12.0,
    )


if __name__ == "__main__":
    sys.exit(main())
