"""Inference speed and memory: equiforce's Allegro vs nequip-allegro on identical weights.

``inference``'s cases and method with the Allegro presets: ``allegro-big`` (l_max 2, 2 layers,
128 scalar / 64 tensor features), ``allegro-small`` (64 / 32), ``allegro-tiny`` (l_max 1,
1 layer, 32 / 8); the peer is nequip-allegro (in ``.venv-nequip``, eager) on our weights
exported with ``equiforce.interop.to_nequip_allegro``. The default water box has 1,029 atoms
(nequip-allegro small alone needs 13.4 GB at 2,187).

    python -m benchmarks.allegro_inference --threads 1 --presets allegro-tiny allegro-small \\
        allegro-big --dtypes float32 --systems molecule batch64 --repeats 21 --warmup 3
"""

from __future__ import annotations

import sys

from benchmarks.inference import run


def main(argv: list[str] | None = None) -> int:
    """Allegro presets against nequip-allegro (see the module docstring)."""
    return run(
        argv,
        "benchmarks.allegro_inference",
        __doc__.split("\n\n")[0],
        presets=("allegro-small", "allegro-big", "allegro-tiny"),
        systems=("molecule", "batch64", "box-1029"),
    )


if __name__ == "__main__":
    sys.exit(main())
