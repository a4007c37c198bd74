"""The memory probe in this process: an allocation between start and stop shows as its size."""

from __future__ import annotations

import numpy as np
import torch

from equiforce.measure.memory import MemoryProbe, peak_memory_mb


def test_memory_probe_sees_an_allocation_in_this_process():
    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    block = np.ones(100 * 2**20 // 8)
    memory = probe.stop()
    del block
    if probe.reset:  # Linux: the high-water mark was reset at start
        assert 90 < memory["peak_minus_baseline_mb"] < 200
    assert memory["source"]


def test_peak_memory_of_one_call_grows_with_what_the_call_allocates():
    small = peak_memory_mb(lambda: np.ones(1024), "cpu")
    large = peak_memory_mb(lambda: np.ones(100 * 2**20 // 8), "cpu")
    if small is None:  # no /proc/self/clear_refs: no figure rather than the process's peak
        assert large is None
        return
    assert small < 20 and 90 < large < 200
