"""The loop's figure: committee uncertainty during each round's MD and the training-set size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence


def plot_rounds(rounds: Sequence[dict[str, Any]], threshold: float, path: str | os.PathLike):
    """Write ``learn.png``: per round, the largest and mean-largest force spread of its MD
    (meV/Å, with the threshold), uncertain frames, and training frames after the round.

    Args:
        rounds: ``round.json`` records, round 0 first.
        threshold: the selection threshold, eV/Å.
        path: PNG to write.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md_rounds = [r for r in rounds if r["round"] > 0]
    index = [r["round"] for r in md_rounds]
    fig = Figure(figsize=(6.5, 6.0), dpi=120)
    FigureCanvasAgg(fig)
    top, middle, bottom = fig.subplots(3, 1, sharex=True)
    top.plot(index, [1e3 * r["max_force_uncertainty"] for r in md_rounds], "o-", label="largest")
    top.plot(index, [1e3 * r["mean_max_force_uncertainty"] for r in md_rounds], "s-", label="mean")
    top.axhline(1e3 * threshold, color="black", linewidth=0.8, label="threshold")
    top.set_ylabel("MD force spread (meV/Å)")
    top.legend()
    middle.bar(index, [r["n_flagged"] for r in md_rounds])
    middle.set_ylabel("uncertain frames")
    bottom.plot([r["round"] for r in rounds], [r["n_train_frames"] for r in rounds], "o-")
    bottom.set_ylabel("training frames")
    bottom.set_xlabel("round")
    fig.tight_layout()
    fig.savefig(path)
    return path
