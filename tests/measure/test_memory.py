"""The memory probe in this process: an allocation between start and stop shows as its size."""

from __future__ import annotations

import numpy as np
import torch

from equiforce.measure.memory import MemoryProbe


def test_memory_probe_sees_an_allocation_in_this_process():
    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    block = np.ones(100 * 2**20 // 8)
    memory = probe.stop()
    del block
    if probe.reset:  # Linux: the high-water mark was reset at start
        assert 90 < memory["peak_minus_baseline_mb"] < 200
    assert memory["source"]
