"""The search's report: every candidate, the choice and why, as JSON, Markdown and a plot.

A candidate row (plain dict) is one (model, precision mode, execution variant): ``name``,
``model`` (``input`` or a student), ``mode``, ``label`` (variant), ``ms_per_call`` on the
target, ``peak_memory_mb``, ``n_parameters``, ``valid_energy_rmse`` (meV/atom),
``valid_forces_rmse`` (meV/Å), ``test_*`` alike, ``speedup`` over the input model as the user
runs it (its own mode, eager, default backend, one thread), ``accepted`` and ``reason``.
The plot shows validation force RMSE against ms per call, the tolerance, the Pareto front
(``distill.report.pareto_front``) and the chosen candidate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from equiforce.files import atomic_write, atomic_write_text
from equiforce.workflows.distill.report import draw_pareto_front

__all__ = ["format_markdown", "plot_pareto", "write_report"]

COLUMNS = (
    ("name", "candidate", "{}"),
    ("n_parameters", "params", "{:,}"),
    ("ms_per_call", "ms/call", "{:.2f}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("peak_memory_mb", "peak MB", "{:.0f}"),
    ("valid_energy_rmse", "valid E (meV/atom)", "{:.3f}"),
    ("valid_forces_rmse", "valid F (meV/Å)", "{:.2f}"),
    ("test_energy_rmse", "test E (meV/atom)", "{:.3f}"),
    ("test_forces_rmse", "test F (meV/Å)", "{:.2f}"),
    ("accepted", "ok", "{}"),
    ("reason", "why", "{}"),
)


def _cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


def format_markdown(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The report as Markdown: the choice, the stages' notes, then every candidate."""
    lines = ["# equiforce compress", ""]
    keys = ("input", "target", "tolerance", "chosen", "why", "speedup", "peer",
            "speedup_over_peer", "outputs", "cost")
    for key in keys:
        if summary.get(key) is not None:
            lines.append(f"- **{key}**: {summary[key]}")
    notes = summary.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += [
        "",
        "## Candidates",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k, f) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot_pareto(
    rows: Sequence[Mapping[str, Any]], force_tol: float, chosen: str | None, path: str | Path
) -> Path:
    """Validation force RMSE against ms per call, one colour per model; PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    timed = [r for r in rows if r.get("ms_per_call") is not None]
    points = [(float(r["ms_per_call"]), float(r["valid_forces_rmse"])) for r in timed]
    fig = Figure(figsize=(6.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for model in dict.fromkeys(r["model"] for r in timed):
        xy = [p for r, p in zip(timed, points, strict=True) if r["model"] == model]
        ax.plot([x for x, _ in xy], [y for _, y in xy], "o", ms=4, label=str(model))
    draw_pareto_front(ax, points)
    ax.axhline(force_tol, color="r", lw=0.8, label=f"tolerance {force_tol:g} meV/Å")
    for row, (x, y) in zip(timed, points, strict=True):
        if row["name"] == chosen:
            ax.plot([x], [y], "*", ms=14, mfc="none", mec="k", label=f"chosen: {chosen}")
    ax.set_xscale("log")
    ax.set_xlabel("ms per energy+forces call on the target")
    ax.set_ylabel("validation force RMSE (meV/Å)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.96)
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))


def write_report(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    force_tol: float,
    directory: str | Path,
) -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``pareto.png`` in ``directory``."""
    directory = Path(directory)
    payload = {"summary": dict(summary), "candidates": list(rows)}
    return {
        "json": atomic_write_text(
            json.dumps(payload, indent=2, default=str), directory / "report.json"
        ),
        "markdown": atomic_write_text(format_markdown(summary, rows), directory / "report.md"),
        "plot": plot_pareto(rows, force_tol, summary.get("chosen"), directory / "pareto.png"),
    }
