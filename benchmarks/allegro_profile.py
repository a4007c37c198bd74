"""Where equiforce's Allegro spends its time: torch.profiler tables by op and category.

``profile_models`` for the Allegro presets (``allegro-big``, ``allegro-small``,
``allegro-tiny``); ``--peers`` profiles nequip-allegro on the same weights beside it, each in
its own worker.

    python -m benchmarks.allegro_profile --peers --presets allegro-tiny --dtypes float32 \\
        --systems molecule batch64 box-1029 --kinds inference --threads 1 --warmup 2 \\
        --repeats 10 --box-repeats 3
"""

from __future__ import annotations

import sys

from benchmarks.inference import run


def main(argv: list[str] | None = None) -> int:
    """Profile Allegro (see the module docstring)."""
    return run(
        argv,
        "benchmarks.allegro_profile",
        __doc__.split("\n\n")[0],
        profile=True,
        presets=("allegro-big", "allegro-small", "allegro-tiny"),
        systems=("molecule", "batch64", "box-3000"),
        kinds=("inference", "train"),
        peers=False,
        warmup=1,
        repeats=3,
        box_repeats=1,
    )


if __name__ == "__main__":
    sys.exit(main())
