"""The free-speed stage: the fastest way to run one model in one precision mode, same numbers.

Variants (``timing.ExecVariant``), all on the target system, one thread first:

* eager with each kernel backend of ``backends`` (default ``reference`` and ``fast``,
  ``equiforce.kernels``; ``cueq`` too where it runs fused, on CUDA);
* compiled (``equiforce.models.compile``, Inductor) with the ``fast`` backend;
* exported (``equiforce.export``), traced with the ``fast`` backend (export swaps MACE's C++
  executors for package-friendly torch ones, ``kernels.export_ops``).

The eager variants are timed first, then the compiled and exported ones, then the fastest
of all at 2, 4, ... threads up to ``threads``. None of these changes the
model's numbers beyond rounding (export validates against eager before writing), so every
variant shares the accuracy of its (model, mode).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from equiforce.kernels.registry import cueq_available
from equiforce.workflows.compress.config import CompressConfig
from equiforce.workflows.compress.timing import ExecVariant, time_variants

__all__ = [
    "EXPORT_BACKEND",
    "base_variants",
    "fastest",
    "free_speed",
    "n_variants",
    "thread_counts",
]

# the kernel backend every family is exported with
EXPORT_BACKEND = "fast"


def base_variants(config: CompressConfig) -> list[ExecVariant]:
    """The one-thread variants tried for a model (of any family)."""
    extra = ["cueq"] if cueq_available() and "cueq" not in config.backends else []
    backends = list(config.backends) + extra
    variants = [ExecVariant(b) for b in backends]
    if config.compile:
        variants.append(ExecVariant("fast", compile=True))
    if config.export:
        variants.append(ExecVariant(EXPORT_BACKEND, export=True))
    return variants


def thread_counts(most: int) -> list[int]:
    """2, 4, 8, ... below ``most``, then ``most`` (empty for one thread)."""
    counts, n = [], 2
    while n < most:
        counts.append(n)
        n *= 2
    return counts + ([most] if most > 1 else [])


def fastest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The timed row with the lowest ``ms_per_call`` (None if none was timed)."""
    timed = [r for r in rows if "ms_per_call" in r]
    return min(timed, key=lambda r: r["ms_per_call"]) if timed else None


def free_speed(
    model_file: str | Path,
    mode: str,
    frames_file: str | Path,
    config: CompressConfig,
    scratch: str | Path,
    beat_ms: float | None = None,
    step: Callable[[str], None] = lambda label: None,
) -> list[dict[str, Any]]:
    """Time ``model_file`` in ``mode``: the eager variants, then compiled and exported ones,
    then the fastest of all at more threads; one row per timed variant (``time_variants``).

    Args:
        beat_ms: prune: when no eager variant is faster than this (ms; e.g. the model's own
            mode eager), stop after the eager ones (a precision mode that does not speed up
            eager calls is not worth compiling and exporting).
        step: progress callback (``time_variants``).
    """
    variants = base_variants(config)
    eager = [v for v in variants if not (v.compile or v.export)]
    rows = time_variants(
        model_file, mode, frames_file, eager, config.warmup, config.repeats, scratch, step
    )
    best = fastest(rows)
    if best is None or (beat_ms is not None and best["ms_per_call"] >= beat_ms):
        return rows
    others = [v for v in variants if v.compile or v.export]
    if others:
        rows += time_variants(
            model_file, mode, frames_file, others, config.warmup, config.repeats, scratch, step
        )
    best = fastest(rows)
    counts = thread_counts(config.threads)
    if best is not None and counts:
        base = ExecVariant(**best["variant"])
        more = [ExecVariant(base.backend, base.compile, base.export, n) for n in counts]
        rows += time_variants(
            model_file, mode, frames_file, more, config.warmup, config.repeats, scratch, step
        )
    return rows


def n_variants(config: CompressConfig) -> int:
    """Timed variants of one (model, mode) without pruning (progress totals)."""
    return len(base_variants(config)) + len(thread_counts(config.threads))
