"""Inference time and peak memory of one model, measured in a fresh process.

``measure_in_subprocess`` runs ``python -m equiforce.workflows.distill.timing SPEC`` so that every model
is timed with the same thread count and its memory is not mixed with other models' (the peak
resident set size of a process only grows). The child loads the model (an equiforce model file
or an ASE calculator spec), makes ``warmup`` untimed and ``calls`` timed energy+forces calls on
one structure (positions jittered by 1e-3 Å before each call, so no calculator cache answers),
and prints one JSON line:

* ``ms_per_call``: median wall time of a call, ms; ``ms_per_atom_step`` = that / n_atoms;
* ``peak_memory_mb``: CUDA peak allocated memory on a GPU, else the growth of the process's
  peak resident set size from just before the model was loaded, MB.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Mapping

import numpy as np


def _rss_mb() -> float:
    """Current resident set size of this process, MB (Linux ``/proc``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def _calculator(spec: Mapping[str, Any]):
    if "model" in spec:
        from equiforce.md.calculator import EquiforceCalculator

        return EquiforceCalculator(
            spec["model"], device=spec.get("device", "cpu"), compile=spec.get("compile", False)
        )
    import importlib

    module, _, name = spec["calculator"].partition(":")
    return getattr(importlib.import_module(module), name)(**spec.get("kwargs", {}))


def measure(spec: Mapping[str, Any]) -> dict[str, float]:
    """Time one model in this process (see the module docstring).

    Args:
        spec: ``{"model": path}`` or ``{"calculator": "module:Class", "kwargs": {...}}``, plus
            ``structure_file`` (extxyz; its first frame is used), ``calls``, ``warmup``,
            ``threads`` and optionally ``device`` and ``compile`` (equiforce models: the
            ``EquiforceCalculator`` option; compiled during the warm-up calls).

    Returns:
        ``ms_per_call``, ``ms_per_atom_step``, ``peak_memory_mb``, ``n_atoms``.
    """
    import torch
    from ase.io import read

    torch.set_num_threads(int(spec["threads"]))
    atoms = read(spec["structure_file"], index=0)
    base = atoms.positions.copy()
    cuda = spec.get("device", "cpu").startswith("cuda")
    before = _rss_mb()
    atoms.calc = _calculator(spec)
    rng = np.random.default_rng(0)
    times = []
    for k in range(int(spec["warmup"]) + int(spec["calls"])):
        atoms.positions = base + rng.normal(0.0, 1e-3, base.shape)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        atoms.get_forces()
        if cuda:
            torch.cuda.synchronize()
        if k >= int(spec["warmup"]):
            times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - before
    ms = 1e3 * statistics.median(times)
    return {
        "ms_per_call": ms,
        "ms_per_atom_step": ms / len(atoms),
        "peak_memory_mb": max(peak, 0.0),
        "n_atoms": len(atoms),
    }


def measure_in_subprocess(spec: Mapping[str, Any]) -> dict[str, float]:
    """``measure(spec)`` in a fresh Python process (same interpreter).

    Raises:
        RuntimeError: the child failed (its stderr is in the message).
    """
    command = [sys.executable, "-m", "equiforce.workflows.distill.timing", json.dumps(dict(spec))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"timing process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
