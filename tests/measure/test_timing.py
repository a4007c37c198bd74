"""Timing primitives on fake callables and a fake clock."""

from __future__ import annotations

import pytest

from equiforce.measure.timing import (
    CallTime,
    device_sync,
    interleave,
    measure_call,
    summarize,
    time_call,
)


def test_summary_statistics_of_known_times():
    stats = summarize([5.0, 1.0, 3.0, 100.0])
    assert stats.median_ms == 4.0 and stats.mean_ms == 27.25
    assert (stats.min_ms, stats.max_ms, stats.n) == (1.0, 100.0, 4)
    assert summarize([2.0, 9.0, 4.0]).median_ms == 4.0


def test_summary_of_call_times_has_wall_and_cpu_medians():
    times = [CallTime(5.0, 1.0), CallTime(1.0, 0.5), CallTime(3.0, 2.0), CallTime(100.0, 9.0)]
    stats = summarize(times)
    assert (stats.median_ms, stats.min_ms, stats.max_ms) == (4.0, 1.0, 100.0)
    assert (stats.median_cpu_ms, stats.min_cpu_ms, stats.n) == (1.5, 0.5, 4)
    assert summarize([2.0, 9.0]).median_cpu_ms is None
    with pytest.raises(ValueError, match="together"):
        summarize([CallTime(1.0, 1.0), 2.0])


def test_measure_call_reads_both_clocks_around_the_call_and_syncs():
    events = []
    walls, cpus = iter([10.0, 10.25]), iter([3.0, 3.1])

    def clock(name, ticks):
        def read():
            events.append(name)
            return next(ticks)

        return read

    elapsed = measure_call(
        lambda: events.append("call"),
        sync=lambda: events.append("sync"),
        wall_clock=clock("wall", walls),
        cpu_clock=clock("cpu", cpus),
    )
    assert elapsed.wall_ms == pytest.approx(250.0) and elapsed.cpu_ms == pytest.approx(100.0)
    assert events == ["sync", "cpu", "wall", "call", "sync", "wall", "cpu"]


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no timed calls"):
        summarize([])


def test_time_call_reads_the_clock_around_the_call_and_syncs():
    events = []
    ticks = iter([10.0, 10.25])

    def clock():
        events.append("clock")
        return next(ticks)

    elapsed = time_call(
        lambda: events.append("call"), sync=lambda: events.append("sync"), clock=clock
    )
    assert elapsed == pytest.approx(250.0)
    assert events == ["sync", "clock", "call", "sync", "clock"]


def _counting_calls() -> tuple[dict, list[str]]:
    """Calls "a" and "b" returning 0, 1, ... and 100, 101, ...; the order they ran in."""
    order: list[str] = []
    counters = {"a": iter(range(100)), "b": iter(range(100, 200))}

    def make(name):
        def call():
            order.append(name)
            return float(next(counters[name]))

        return call

    return {"a": make("a"), "b": make("b")}, order


def test_interleave_alternates_implementations_and_drops_warmup():
    calls, order = _counting_calls()
    times = interleave(calls, warmup=2, repeats=3)
    assert order == ["a", "b"] * 5
    assert times == {"a": [2.0, 3.0, 4.0], "b": [102.0, 103.0, 104.0]}


def test_interleave_settles_each_implementation_before_timing_it():
    calls, order = _counting_calls()
    times = interleave(calls, warmup=1, repeats=2, settle=2)
    assert order == ["a", "b"] + ["a", "a", "a", "b", "b", "b"] * 2
    assert times == {"a": [3.0, 6.0], "b": [103.0, 106.0]}  # the third call of each block


@pytest.mark.parametrize(("warmup", "repeats", "settle"), [(-1, 3, 0), (0, 0, 0), (0, 1, -1)])
def test_interleave_rejects_bad_counts(warmup, repeats, settle):
    with pytest.raises(ValueError, match="warmup"):
        interleave({"a": lambda: 1.0}, warmup=warmup, repeats=repeats, settle=settle)


def test_device_sync_waits_on_cuda_only():
    assert device_sync("cpu") is None
    assert callable(device_sync("cuda:0"))
