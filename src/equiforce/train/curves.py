"""Learning-curve figure: train/valid loss and force RMSE against epoch (log y)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from equiforce.files import atomic_write


def plot_learning_curve(history: Sequence[Mapping[str, object]], path: str | os.PathLike) -> Path:
    """Write the learning curve PNG atomically.

    Args:
        history: per-epoch rows with ``epoch``, ``train_loss``, ``valid_loss``,
            ``train_forces_rmse`` and ``valid_forces_rmse`` (meV/Å); ``stage`` marks the start
            of the final stage with a vertical line.
        path: PNG file to write.

    Returns:
        ``path`` as a ``Path``.
    """
    # The Agg canvas is used directly: no pyplot backend or global figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    panels = (("loss", "loss", "loss"), ("forces_rmse", "force RMSE (meV/Å)", "force RMSE"))
    epochs = [float(row["epoch"]) for row in history]
    stage_two = [float(r["epoch"]) for r in history if r["stage"] == "stage_two"]
    for index, (suffix, ylabel, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        for split in ("train", "valid"):
            values = [float(row[f"{split}_{suffix}"]) for row in history]
            if any(math.isfinite(v) and v > 0 for v in values):
                ax.plot(epochs, values, marker="o", markersize=2.5, label=split)
        if stage_two:
            ax.axvline(stage_two[0], color="grey", linestyle=":", label="final stage")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14, top=0.9, wspace=0.3)
    atomic_write(path, lambda handle: fig.savefig(handle, format="png"))
    return path
