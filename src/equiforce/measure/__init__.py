"""How equiforce measures: wall time, peak memory, a call in a fresh process, the machine.

One definition for every figure the package reports (``equiforce bench``, the precision
audit, distillation's teacher and student timings), so that they are comparable:

* ``timing``: ``measure_call`` (one call's wall ms and CPU ms on its ``cpu_clock``, a
  ``CallTime``), ``time_call`` (wall ms only; ``device_sync`` makes both wait for CUDA work),
  ``interleave`` (warm-up rounds, then timed rounds alternating implementations),
  ``summarize`` (median, mean, min, max of wall ms, median and min CPU ms; the medians are
  the reported figures; on a loaded machine with one thread, quote the CPU-time ratio).
* ``memory``: ``MemoryProbe``, the peak of a stretch of work over its baseline, MB: resident
  set on CPU (freed heap returned with ``malloc_trim``, high-water mark reset through
  ``/proc/self/clear_refs``), allocator peak on CUDA; ``peak_memory_mb`` for one call.
* ``protocol``: ``WorkerProcess`` (driver) and ``serve`` (worker): a prepared call timed (wall
  and CPU, in the worker) and its memory probed in a fresh process, commands and JSON replies
  over pipes.
* ``machine``: ``machine_info`` (CPU with its low-precision flags, GPU, memory, versions,
  commit), recorded beside every report.

A low tier: imports torch and numpy, never models, train or workflows.
"""

from equiforce.measure.machine import cpu_flags, git_commit, machine_info, mem_available_gb
from equiforce.measure.memory import MemoryProbe, current_rss_mb, peak_memory_mb, peak_rss_mb
from equiforce.measure.protocol import (
    Session,
    WorkerError,
    WorkerProcess,
    serve,
    worker_environment,
)
from equiforce.measure.timing import (
    CallTime,
    TimingStats,
    device_sync,
    interleave,
    measure_call,
    summarize,
    time_call,
)

__all__ = [
    "CallTime",
    "MemoryProbe",
    "Session",
    "TimingStats",
    "WorkerError",
    "WorkerProcess",
    "cpu_flags",
    "current_rss_mb",
    "device_sync",
    "git_commit",
    "interleave",
    "machine_info",
    "measure_call",
    "mem_available_gb",
    "peak_memory_mb",
    "peak_rss_mb",
    "serve",
    "summarize",
    "time_call",
    "worker_environment",
]
