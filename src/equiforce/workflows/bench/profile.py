"""Where a call's time goes: torch.profiler self time by op and by category, Python overhead.

``profile_call(call)`` runs one call under ``torch.profiler`` (CPU activity) and returns the
ops' self CPU time (top ``top`` ops, every category's sum) and the "Python overhead"
``1 - (summed self time of all ops) / wall of the profiled call``: the share of the wall time
outside torch ops (interpreter, dispatch, autograd bookkeeping). It is a lower bound, since
dispatch inside an op counts as op time. A bench worker serves it as its ``profile`` command
(``BenchConfig.profile``); ``format_profile`` renders one result as markdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["CATEGORIES", "category", "format_profile", "profile_call"]

# category -> fragments of lower-case op names (without "aten::"), first match wins; ops of
# equiforce's own C++ library are "equiforce kernels", everything else "elementwise/other".
CATEGORIES: dict[str, tuple[str, ...]] = {
    "matmul": ("mm", "matmul", "linear", "einsum", "bmm", "addmm", "baddbmm", "dot"),
    "gather/scatter": ("index", "gather", "scatter", "embedding", "segment"),
    "copy/cat/fill": ("copy", "cat", "clone", "contiguous", "zero", "fill", "empty", "stack"),
}
KERNELS = "equiforce kernels"
OTHER = "elementwise/other"


def category(op: str) -> str:
    """Coarse category of a profiler op name (see ``CATEGORIES``)."""
    if op.startswith("equiforce::"):
        return KERNELS
    lowered = op.lower().removeprefix("aten::")
    for label, fragments in CATEGORIES.items():
        if any(fragment in lowered for fragment in fragments):
            return label
    return OTHER


def profile_call(call: Callable[[], object], top: int = 12) -> dict[str, Any]:
    """Profile one ``call()``.

    Args:
        call: the call (warmed up by the caller).
        top: ops kept in ``top_ops``, by self time.

    Returns:
        ``profiled_wall_ms``, ``op_self_total_ms``, ``python_overhead_share``,
        ``by_category_ms`` (every category) and ``top_ops`` (``op``, ``self_cpu_ms``, ``calls``).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        call()
        wall_ms = (time.perf_counter() - start) * 1000.0
    rows = [
        {"op": event.key, "self_cpu_ms": event.self_cpu_time_total / 1000.0, "calls": event.count}
        for event in prof.key_averages()
    ]
    rows.sort(key=lambda row: -row["self_cpu_ms"])
    total = sum(row["self_cpu_ms"] for row in rows)
    by_category = dict.fromkeys([*CATEGORIES, KERNELS, OTHER], 0.0)
    for row in rows:
        by_category[category(row["op"])] += row["self_cpu_ms"]
    return {
        "profiled_wall_ms": wall_ms,
        "op_self_total_ms": total,
        "python_overhead_share": max(0.0, 1.0 - total / wall_ms),
        "by_category_ms": by_category,
        "top_ops": rows[:top],
    }


def format_profile(title: str, profile: dict[str, Any]) -> str:
    """Markdown: a heading line, the top-ops table and the category shares."""
    total = profile["op_self_total_ms"]
    lines = [
        f"**{title}**: profiled call {profile['profiled_wall_ms']:.1f} ms, of which ops "
        f"{total:.1f} ms -> Python overhead {100 * profile['python_overhead_share']:.0f}%",
        "",
        "| op | self CPU ms | % | calls |",
        "|---|---|---|---|",
    ]
    for row in profile["top_ops"]:
        share = 100 * row["self_cpu_ms"] / total if total else 0.0
        lines.append(f"| `{row['op']}` | {row['self_cpu_ms']:.1f} | {share:.1f} | {row['calls']} |")
    shares = sorted(profile["by_category_ms"].items(), key=lambda item: -item[1])
    text = ", ".join(f"{name} {100 * ms / (total or 1):.0f}%" for name, ms in shares)
    lines += ["", f"By category: {text}"]
    return "\n".join(lines)
