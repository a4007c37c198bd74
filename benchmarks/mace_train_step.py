"""One MACE training step (energy + force loss, double backward): equiforce vs mace-torch.

``inference``'s runner with the call kind ``train``
(``equiforce.workflows.bench.kinds``): energy and forces with ``create_graph``, the loss
``1e-3 * sum(E) + mean(F^2)`` and its backward, no optimiser, in both codes on identical
weights (mace-torch with ``training=True``), calls alternated. Default: ``mace-small`` (32
channels) and ``mace-128-l1`` on a batch of 5 AcAc molecules, float32, 1 thread, median of 10
after 3 warm-up rounds.

    python -m benchmarks.mace_train_step --presets mace-small mace-128-l1 --threads 1
"""

from __future__ import annotations

import sys

from benchmarks.inference import run


def main(argv: list[str] | None = None) -> int:
    """MACE training steps against mace-torch (see the module docstring)."""
    return run(
        argv,
        "benchmarks.mace_train_step",
        __doc__.split("\n\n")[0],
        presets=("mace-small", "mace-128-l1"),
        dtypes=("float32",),
        systems=("batch5",),
        kinds=("train",),
        threads=1,
        warmup=3,
        repeats=10,
    )


if __name__ == "__main__":
    sys.exit(main())
