"""Where equiforce's MACE spends its time: torch.profiler tables by op and category.

``inference``'s runner with ``BenchConfig.profile``: after the timed calls each worker runs one
more call under ``torch.profiler`` (``equiforce.workflows.bench.profile``): self CPU time per
op, the shares of matmul / elementwise / copy-cat-fill / gather-scatter / equiforce's C++
kernels, and the Python overhead (profiled wall minus op time, a lower bound), printed as
markdown. Cases: ``mace-128-l1`` in float32 and float64, one molecule and a batch of 64,
inference and training step; ``--peers`` profiles mace-torch beside it.

    python -m benchmarks.profile_models --backend fast --dtypes float32 float64 \\
        --systems molecule batch64 --kinds inference train --repeats 3 --warmup 1
"""

from __future__ import annotations

import sys

from benchmarks.inference import run


def main(argv: list[str] | None = None) -> int:
    """Profile MACE (see the module docstring)."""
    return run(
        argv,
        "benchmarks.profile_models",
        __doc__.split("\n\n")[0],
        profile=True,
        presets=("mace-128-l1",),
        systems=("molecule", "batch64"),
        kinds=("inference", "train"),
        peers=False,
        warmup=1,
        repeats=3,
    )


if __name__ == "__main__":
    sys.exit(main())
