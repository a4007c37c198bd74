"""Timing primitives: one timed call, interleaved repeats, and their summary statistics.

Two clocks per call (``measure_call``): wall time (``time.perf_counter``) and the CPU time of
the calling **process** (``time.process_time``: user + system of all its threads; time spent
waiting for a core excluded). Process rather than thread time because torch's intra-op
threads do their part of the work on threads other than the caller's: with ``--threads N``
thread time would miss it, process time counts it (and may then exceed wall time, up to N
times). With one thread the two nearly agree; a caller that pins torch to one thread and
quotes the calling thread's figure passes ``cpu_clock=time.thread_time`` (the work of any
other thread of the process then left out). On cores shared with other jobs the wall time
mostly measures the wait for a core (wall ratios of the same code swung ±50% between runs at
a load of 7-13 on 2 cores); with one thread the CPU-time ratio is the figure to quote there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

__all__ = [
    "CallTime",
    "TimingStats",
    "device_sync",
    "interleave",
    "measure_call",
    "summarize",
    "time_call",
]

T = TypeVar("T")


@dataclass(frozen=True)
class CallTime:
    """Wall and CPU time of one call (``measure_call``).

    Attributes:
        wall_ms: wall-clock time, ms.
        cpu_ms: CPU time over the call by ``measure_call``'s ``cpu_clock``: the calling
            process's (all its threads) unless the caller chose the thread's, ms.
    """

    wall_ms: float
    cpu_ms: float


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings of one call.

    Attributes:
        median_ms: median wall time per call, ms (the reported figure).
        mean_ms: mean, ms.
        min_ms: fastest call, ms.
        max_ms: slowest call, ms.
        n: number of timed calls.
        median_cpu_ms: median CPU time per call (``CallTime.cpu_ms``), ms (None: only wall
            times were given).
        min_cpu_ms: least CPU time of a call, ms (None likewise).
    """

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    n: int
    median_cpu_ms: float | None = None
    min_cpu_ms: float | None = None


def summarize(times: Sequence[float] | Sequence[CallTime]) -> TimingStats:
    """Statistics of timed calls: wall ms (floats), or wall and CPU ms (``CallTime``).

    Raises:
        ValueError: no calls, or floats and ``CallTime`` mixed.
    """
    if not times:
        raise ValueError("no timed calls to summarize")
    timed = [t for t in times if isinstance(t, CallTime)]
    if timed and len(timed) != len(times):
        raise ValueError("cannot summarize wall-time floats and CallTime records together")
    wall = [t.wall_ms for t in timed] if timed else [float(t) for t in times]
    cpu = [t.cpu_ms for t in timed]
    return TimingStats(
        median_ms=statistics.median(wall),
        mean_ms=statistics.fmean(wall),
        min_ms=min(wall),
        max_ms=max(wall),
        n=len(wall),
        median_cpu_ms=statistics.median(cpu) if cpu else None,
        min_cpu_ms=min(cpu) if cpu else None,
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


def measure_call(
    fn: Callable[[], object],
    sync: Callable[[], None] | None = None,
    wall_clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> CallTime:
    """Wall time and CPU time (process's by default) of one ``fn()`` call (module docstring), ms.

    Both clocks are read right around the call, inside the process that makes it (a
    worker's pipe traffic is not counted).

    Args:
        fn: the call to time.
        sync: called before starting and before stopping the clocks (``device_sync``); the
            CPU a CUDA synchronisation spends waiting counts as CPU time.
        wall_clock: seconds-valued wall clock.
        cpu_clock: seconds-valued CPU clock: ``time.process_time`` (all threads of the
            process) or ``time.thread_time`` (the calling thread only).
    """
    if sync is not None:
        sync()
    cpu_start = cpu_clock()
    wall_start = wall_clock()
    fn()
    if sync is not None:
        sync()
    wall = wall_clock() - wall_start
    cpu = cpu_clock() - cpu_start
    return CallTime(wall_ms=wall * 1000.0, cpu_ms=cpu * 1000.0)


def interleave(
    calls: Mapping[str, Callable[[], T]], warmup: int, repeats: int, settle: int = 0
) -> dict[str, list[T]]:
    """Time several implementations alternately, so that outside load hits all alike.

    Args:
        calls: name -> function making one call and returning its time (ms, or a
            ``CallTime``).
        warmup: untimed rounds first (each implementation once per round).
        repeats: timed rounds.
        settle: untimed calls of an implementation right before each of its timed ones, so
            that it is timed with its own data in the caches, as in an MD loop that calls
            one model step after step (0: strict alternation, where each call finds the
            caches holding the previous implementation's data).

    Returns:
        name -> the ``repeats`` times of that implementation, in call order.
    """
    if warmup < 0 or repeats < 1 or settle < 0:
        raise ValueError(
            f"need warmup >= 0, repeats >= 1 and settle >= 0, got {warmup}, {repeats}, {settle}"
        )
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[T]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            for _ in range(settle):
                call()
            times[name].append(call())
    return times
