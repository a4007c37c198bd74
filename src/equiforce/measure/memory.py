"""Peak memory of a stretch of work in this process: resident set (CPU) or CUDA allocator.

On Linux the resident-set high-water mark (``VmHWM``) can be reset by writing ``5`` to
``/proc/self/clear_refs``, so the peak of the timed calls alone is measured even when model
building or conversion peaked higher. Where that is not possible the process-lifetime peak
(``ru_maxrss``) is used and ``reset`` says so. Before the baseline is read, freed heap pages
go back to the OS (glibc ``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import gc
import resource
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["MemoryProbe", "current_rss_mb", "peak_memory_mb", "peak_rss_mb"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    """Resident set size of this process now, MB (0 where /proc is unavailable)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """Resident-set high-water mark since start or the last reset, MB."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so the resident set is what is in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class MemoryProbe:
    """Baseline and peak memory around a stretch of work.

    ``start()`` records the baseline and resets the peak; ``stop()`` returns the figures.
    On CUDA devices the figures are ``torch.cuda`` allocator bytes, on CPU the resident set.

    Args:
        device: device the work runs on.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.baseline_mb = 0.0
        self.reset = False

    def start(self) -> None:
        """Record the baseline and reset the peak."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.reset = True
        else:
            # memory freed during setup but kept by the allocator would otherwise be reused by
            # the calls without raising the resident set, hiding part of their working set
            _release_free_heap()
            self.baseline_mb = current_rss_mb()
            self.reset = _reset_peak_rss()

    def stop(self) -> dict[str, float | bool | str]:
        """Peak since ``start``, its baseline and their difference (MB), and the source."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            source = "torch.cuda.max_memory_allocated"
        else:
            peak = peak_rss_mb()
            source = "VmHWM (reset before the calls)" if self.reset else "ru_maxrss (process)"
        return {
            "baseline_mb": self.baseline_mb,
            "peak_mb": peak,
            "peak_minus_baseline_mb": peak - self.baseline_mb,
            "source": source,
        }


def peak_memory_mb(call: Callable[[], object], device: torch.device | str) -> float | None:
    """Peak memory of one ``call()`` over the memory in use before it, MB (``MemoryProbe``).

    The in-process form of the figure a worker reports (``peak_minus_baseline_mb``).
    None on CPU where the high-water mark cannot be reset (no ``/proc/self/clear_refs``), as
    the process's lifetime peak would not be the call's.
    """
    probe = MemoryProbe(torch.device(device))
    probe.start()
    call()
    memory = probe.stop()
    return float(memory["peak_minus_baseline_mb"]) if probe.reset else None
