"""Bench report outputs: the JSON file, a text table, the ms-per-atom-step plot, and the rows
of the "current ratios" table of docs/performance.md (``RATIO_HEADER``, ``ratio_rows``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from equiforce.files import atomic_write, atomic_write_text

__all__ = [
    "CALL_LABELS",
    "RATIO_HEADER",
    "extrapolated_peak_mb",
    "format_table",
    "machine_summary",
    "ratio_rows",
    "scaling_exponents",
    "write_json",
    "write_plot",
]


CALL_LABELS = {
    "inference": "energy + forces",
    "train": "force-loss gradients",
    "train-step": "training step",
}
"""What one call of each kind (``kinds``) is, as the plot's axis says."""

RATIO_HEADER = (
    "| date | commit | machine (CPU flags) | load | model | precision | call | system (atoms) "
    "| equiforce ms wall / CPU | other | other ms wall / CPU | other / equiforce wall / CPU "
    "| command |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
"""Header of the "current ratios" table of docs/performance.md; ``ratio_rows`` fills it.
Time cells carry the median wall time and, after a slash, the median CPU time of the worker
process (a report without CPU times, from before they were recorded: wall only)."""


def write_json(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the report as indented JSON, atomically."""
    return atomic_write_text(json.dumps(report, indent=2) + "\n", path)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    """One line per (system, implementation): ms/call, atom-steps/s, memory, peer ratios."""
    settings = report["settings"]
    lines = [
        f"{_model_label(report)}, {settings['precision']}, {settings['kind']} calls, "
        f"{settings['threads']} thread(s), {settings['device']}",
        f"{'system':10s} {'atoms':>7s} {'edges':>9s} {'impl':15s} {'ms/call':>10s} "
        f"{'cpu ms':>10s} {'atom-steps/s':>12s} {'peak MB':>9s} {'x time':>7s} {'x cpu':>6s} "
        f"{'x mem':>6s}  parity (dE/atom, dF)",
    ]
    for result in report["results"]:
        head = f"{result['system']:10s} {result['n_atoms']:7d}"
        if "error" in result:
            lines.append(f"{head} ERROR: {result['error'].splitlines()[0][:200]}")
            continue
        for impl, message in result.get("failed", {}).items():
            lines.append(f"{head} {impl} FAILED: {message.splitlines()[0][:200]}")
        for impl, data in result["implementations"].items():
            ratio = result["ratios"].get(impl, {})
            parity = ratio.get("parity")
            agreement = (
                f"  {parity['max_abs_energy_diff_per_atom_eV']:.1e} eV, "
                f"{parity['max_abs_force_diff_eV_per_A']:.1e} eV/Å"
                if parity
                else ""
            )
            lines.append(
                f"{head} {result['n_edges']:9d} {impl:15s} {data['timing']['median_ms']:10.2f} "
                f"{_fmt(data['timing'].get('median_cpu_ms'), '10.2f'):>10s} "
                f"{data['atom_steps_per_s']:12.4g} "
                f"{data['memory']['peak_minus_baseline_mb']:9.1f} "
                f"{_fmt(ratio.get('time'), '7.2f'):>7s} {_fmt(ratio.get('cpu_time'), '6.2f'):>6s} "
                f"{_fmt(ratio.get('memory'), '6.2f'):>6s}{agreement}"
            )
    lines.append(
        "ms/call: median wall time; cpu ms: median CPU time of the worker process (all threads)"
    )
    lines.append(
        "x time, x cpu, x mem: peer (or variant) / equiforce in wall time, CPU time, memory "
        "(above 1: equiforce is faster / leaner); on a loaded machine with 1 thread quote x cpu"
    )
    for impl, slope in scaling_exponents(report).items():
        memory = f", memory {slope['memory']:.3f}" if "memory" in slope else ""
        lines.append(
            f"log-log slope vs atoms over {slope['n_boxes']} boxes, {impl}: "
            f"time {slope['time']:.3f}{memory}"
        )
    return "\n".join(lines)


def scaling_exponents(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Log-log slopes of time and memory against atoms over the periodic boxes (``box-N``,
    ``fcc-N``).

    A slope of 1 is linear scaling. Implementations with fewer than two boxes are left out.

    Returns:
        implementation -> ``{"time": slope, "memory": slope, "n_boxes": count}``; the memory
        slope is omitted when a box reports no memory above its baseline.
    """
    points: dict[str, list[tuple[float, float, float]]] = {}
    for result in report["results"]:
        if not result["system"].startswith(("box-", "fcc-")) or "error" in result:
            continue
        for impl, data in result["implementations"].items():
            memory = data["memory"]["peak_minus_baseline_mb"]
            points.setdefault(impl, []).append(
                (result["n_atoms"], data["timing"]["median_ms"], memory)
            )
    slopes: dict[str, dict[str, float]] = {}
    for impl, values in points.items():
        if len({n for n, _, _ in values}) < 2:
            continue
        slopes[impl] = {"time": _slope([(n, t) for n, t, _ in values]), "n_boxes": len(values)}
        if all(m > 0 for _, _, m in values):
            slopes[impl]["memory"] = _slope([(n, m) for n, _, m in values])
    return slopes


def extrapolated_peak_mb(results: list[dict[str, Any]], n_atoms: int) -> float:
    """A worker's peak memory (MB) predicted at ``n_atoms`` from systems already measured.

    The largest worker peak of each measured system, extrapolated linearly in atoms through
    the two largest systems; 0 with fewer than two measured systems.
    """
    points = sorted(
        (result["n_atoms"], max(d["memory"]["peak_mb"] for d in result["implementations"].values()))
        for result in results
        if result.get("implementations")
    )
    if len(points) < 2:
        return 0.0
    (n_small, small), (n_large, large) = points[-2:]
    return large + (large - small) / max(1, n_large - n_small) * (n_atoms - n_large)


def _slope(pairs: list[tuple[float, float]]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    xs = [math.log(x) for x, _ in pairs]
    ys = [math.log(y) for _, y in pairs]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    return covariance / sum((x - x_mean) ** 2 for x in xs)


def write_plot(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Log-log plot of ms per atom-step against atoms, one line per implementation (PNG)."""
    # The Agg canvas is used directly: no pyplot backend or global figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, list[tuple[int, float, str]]] = {}
    for result in report["results"]:
        for impl, data in result.get("implementations", {}).items():
            point = (result["n_atoms"], data["ms_per_atom_step"], result["system"])
            series.setdefault(impl, []).append(point)
    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for impl, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=impl)
        if impl == "equiforce":
            for x, y, name in points:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms")
    settings = report["settings"]
    ax.set_ylabel(f"ms per atom-step ({CALL_LABELS.get(settings['kind'], settings['kind'])})")
    ax.set_title(
        f"{_model_label(report)}, {settings['precision']}, threads: {settings['threads']}, "
        f"{settings['device']}"
    )
    if series:
        ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))


def _model_label(report: dict[str, Any]) -> str:
    settings = report["settings"]
    return settings["preset"] or Path(settings["model"]).name


def machine_summary(machine: dict[str, Any]) -> str:
    """``"<cpu model>, <n> CPUs, <flags present>"`` of a report's ``machine`` entry
    (``equiforce.measure.machine.machine_info``; flags of ``LOW_PRECISION_FLAGS``), plus the
    GPU when there is one."""
    flags = " ".join(flag for flag, present in machine.get("cpu_flags", {}).items() if present)
    cpus = machine.get("cpus") or machine.get("cpu_count")
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine.get('cpu_model') or 'unknown CPU'}, {cpus} CPUs, {flags or 'none'}{gpu}"


def ratio_rows(report: dict[str, Any], command: str) -> list[str]:
    """Markdown rows of the "current ratios" table (``RATIO_HEADER``), one per system and
    peer or variant of ``report``: date, commit, machine, the 1-minute load average when the
    system started, model, precision, call kind, median ms of both and other / equiforce, each
    as wall / CPU time (the CPU ratio in bold: the figure to quote on a loaded machine with
    one thread; wall only for a report without CPU times).

    Args:
        report: a ``run_bench`` report.
        command: the command that made it (the row's last cell).
    """
    machine, settings = report["machine"], report["settings"]
    commit = machine.get("git_commit", "unknown")
    dirty = "-dirty" if commit.endswith("-dirty") else ""
    head = [report["date"][:10], f"`{commit[:10]}`{dirty}", machine_summary(machine)]
    rows = []
    for result in report["results"]:
        ours = result.get("implementations", {}).get("equiforce")
        if ours is None:
            continue
        load = result.get("load_avg", machine.get("load_avg", [math.nan]))[0]
        for impl, ratio in result["ratios"].items():
            cells = [
                *head,
                f"{load:.1f}",
                _model_label(report),
                settings["precision"],
                settings["kind"],
                f"{result['system']} ({result['n_atoms']:,})",
                _wall_cpu_ms(ours["timing"]),
                impl,
                _wall_cpu_ms(result["implementations"][impl]["timing"]),
                _wall_cpu_ratio(ratio),
                f"`{command}`",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _wall_cpu_ms(timing: dict[str, Any]) -> str:
    """``"wall / CPU"`` median ms of a ``timing`` entry (wall alone without a CPU time)."""
    cpu = timing.get("median_cpu_ms")
    wall = f"{timing['median_ms']:,.1f}"
    return wall if cpu is None else f"{wall} / {cpu:,.1f}"


def _wall_cpu_ratio(ratio: dict[str, Any]) -> str:
    """``"wall / **CPU**"`` ratio cell (wall ratio alone, in bold, without a CPU ratio)."""
    cpu = ratio.get("cpu_time")
    if cpu is None:
        return f"**{ratio['time']:.2f}**"
    return f"{ratio['time']:.2f} / **{cpu:.2f}**"
