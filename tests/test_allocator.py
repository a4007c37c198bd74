"""``equiforce.allocator``: freed tensor memory is reused, not faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# a step's pattern: allocate, fill and free a 150 MB tensor (above glibc's largest dynamic mmap
# threshold, 32 MB, and the 64 MiB this module first set; a 999-atom box's MACE radial weights
# are 141 MB) and four 5 MB ones, 25 times; print whether the thresholds were set and the
# minor page faults of the last 20 rounds (the first ones map the pages the heap settles on)
_SCRIPT = """
import json, resource, torch
from equiforce.allocator import retain_freed_memory
applied = retain_freed_memory()
def round_trip():
    tensors = [torch.ones(37_500_000)] + [torch.ones(1_250_000) for _ in range(4)]
    del tensors
for _ in range(5):
    round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_trip()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _run(malloc_setting: str | None) -> dict:
    env = dict(os.environ)
    env.pop("EQUIFORCE_MALLOC", None)
    if malloc_setting is not None:
        env["EQUIFORCE_MALLOC"] = malloc_setting
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_tensors_are_reused_without_page_faults():
    default = _run("default")
    retained = _run(None)
    assert default["applied"] is False
    if not retained["applied"]:
        pytest.skip("not glibc: the allocator is left alone")
    # glibc's defaults map and unmap the 150 MB every round: 20 x 36,621 pages
    assert default["faults"] > 20 * 30_000, default
    assert retained["faults"] < default["faults"] / 10, (retained, default)
