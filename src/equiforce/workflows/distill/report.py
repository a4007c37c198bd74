"""The distillation report: errors on the ground-truth test set, agreement, size, speed, memory.

Rows (one for the teacher, one per student) are plain dicts, written as JSON and as a
Markdown table; ``plot_pareto`` draws test force RMSE against inference ms per atom-step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from equiforce.data.graph import Configuration
from equiforce.files import atomic_write, atomic_write_text
from equiforce.workflows.distill.teacher import Labels

COLUMNS = (
    ("name", "model", "{}"),
    ("n_parameters", "parameters", "{:,}"),
    ("test_energy_rmse", "test E RMSE (meV/atom)", "{:.2f}"),
    ("test_forces_rmse", "test F RMSE (meV/Å)", "{:.2f}"),
    ("teacher_energy_rmse", "vs teacher E (meV/atom)", "{:.2f}"),
    ("teacher_forces_rmse", "vs teacher F (meV/Å)", "{:.2f}"),
    ("ms_per_call", "ms/call", "{:.2f}"),
    ("peak_memory_mb", "peak mem (MB)", "{:.0f}"),
    ("speedup", "speed-up", "{:.2f}x"),
)


def label_errors(
    predicted: Sequence[Labels], reference: Sequence[Configuration | Labels]
) -> dict[str, float]:
    """RMSE and MAE of energy per atom (meV/atom) and force components (meV/Å).

    Structures whose reference lacks energy or forces are left out of that quantity;
    a quantity with no reference values is NaN.
    """
    de, df = [], []
    for pred, ref in zip(predicted, reference, strict=True):
        n_atoms = len(pred.forces)
        if ref.energy is not None:
            de.append(1e3 * (pred.energy - ref.energy) / n_atoms)
        if ref.forces is not None:
            df.append(1e3 * (pred.forces - ref.forces).ravel())
    out = {}
    for name, errors in (("energy", np.asarray(de)), ("forces", _concat(df))):
        empty = errors.size == 0
        out[f"{name}_rmse"] = math.nan if empty else float(np.sqrt(np.mean(errors**2)))
        out[f"{name}_mae"] = math.nan if empty else float(np.mean(np.abs(errors)))
    return out


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def prefixed(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    """``{prefix_key: value}``."""
    return {f"{prefix}_{k}": v for k, v in values.items()}


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of report rows (missing or NaN values shown as ``-``)."""
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append("-" if missing else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(rows: Sequence[Mapping[str, Any]], directory: str | Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.md`` in ``directory``."""
    directory = Path(directory)
    json_path = atomic_write_text(
        json.dumps(list(rows), indent=2, default=float), directory / "report.json"
    )
    md_path = atomic_write_text(format_table(rows) + "\n", directory / "report.md")
    return json_path, md_path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (cost, error), sorted by cost."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1]))
    front, best = [], math.inf
    for k in order:
        if points[k][1] < best:
            front.append(k)
            best = points[k][1]
    return front


def draw_pareto_front(ax, points: Sequence[tuple[float, float]]) -> None:
    """Join the non-dominated ``points`` (cost, error) on ``ax`` with a dashed line (2+ points)."""
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(
            [points[k][0] for k in front],
            [points[k][1] for k in front],
            "k--",
            lw=0.8,
            label="Pareto front",
        )


def plot_pareto(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Test force RMSE against ms per atom-step, Pareto front joined; PNG.

    Args:
        rows: report rows with ``name``, ``ms_per_atom_step`` and ``test_forces_rmse``.
        path: PNG file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    usable = [r for r in rows if math.isfinite(r.get("test_forces_rmse", math.nan))]
    points = [(float(r["ms_per_atom_step"]), float(r["test_forces_rmse"])) for r in usable]
    fig = Figure(figsize=(5.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for row, (x, y) in zip(usable, points, strict=True):
        marker = "s" if row.get("role") == "teacher" else "o"
        ax.plot([x], [y], marker=marker, linestyle="none", label=str(row["name"]))
    draw_pareto_front(ax, points)
    ax.set_xscale("log")
    ax.set_xlabel("inference time (ms per atom-step)")
    ax.set_ylabel("test force RMSE (meV/Å)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.96)
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))
