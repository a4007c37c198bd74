"""Timing primitives: one timed call, interleaved repeats, and their summary statistics."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["TimingStats", "device_sync", "interleave", "summarize", "time_call"]


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings of one call.

    Attributes:
        median_ms: median wall time per call, ms (the reported figure).
        mean_ms: mean, ms.
        min_ms: fastest call, ms.
        max_ms: slowest call, ms.
        n: number of timed calls.
    """

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    n: int


def summarize(times_ms: Sequence[float]) -> TimingStats:
    """Statistics of timed calls (ms); raises ``ValueError`` when there are none."""
    if not times_ms:
        raise ValueError("no timed calls to summarize")
    return TimingStats(
        median_ms=statistics.median(times_ms),
        mean_ms=statistics.fmean(times_ms),
        min_ms=min(times_ms),
        max_ms=max(times_ms),
        n=len(times_ms),
    )


def device_sync(device: torch.device | str) -> Callable[[], None] | None:
    """The ``sync`` of ``time_call`` for work on ``device``: CUDA's synchronize, else None."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def time_call(
    fn: Callable[[], object],
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Wall time of one ``fn()`` call, ms.

    Args:
        fn: the call to time.
        sync: called before starting and before stopping the clock (e.g.
            ``torch.cuda.synchronize`` so that queued GPU work is counted).
        clock: seconds-valued clock.
    """
    if sync is not None:
        sync()
    start = clock()
    fn()
    if sync is not None:
        sync()
    return (clock() - start) * 1000.0


def interleave(
    calls: Mapping[str, Callable[[], float]], warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Time several implementations alternately, so that outside load hits all alike.

    Args:
        calls: name -> function making one call and returning its time in ms.
        warmup: untimed rounds first (each implementation once per round).
        repeats: timed rounds.

    Returns:
        name -> the ``repeats`` times of that implementation, ms, in call order.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(call())
    return times
