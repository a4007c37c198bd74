"""Inference time and peak memory of one model (teacher or student), in a fresh process.

``measure_in_subprocess(spec)`` starts ``python -m equiforce.workflows.distill.timing SPEC`` as
a worker of ``equiforce.measure.protocol`` (the protocol of ``equiforce bench``), so that every
model runs with the same thread count and its memory is not mixed with other models'. The
worker loads the model (an equiforce model file or an ASE calculator spec) and the structure;
each call jitters the positions by 1e-3 Å (so no calculator cache answers) and asks for the
forces. The driver makes ``warmup`` untimed and then ``calls`` timed calls and returns:

* ``ms_per_call``: median wall time of a timed call, ms; ``ms_per_atom_step`` = that / n_atoms;
* ``peak_memory_mb``: peak memory of the calls over the memory in use before the first one,
  MB (``equiforce.measure.memory.MemoryProbe``: the ``peak_minus_baseline_mb`` of
  ``equiforce bench``; CPU resident set with its high-water mark reset, CUDA allocator peak);
* ``n_atoms``.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from typing import Any, Mapping

import numpy as np
import torch

from equiforce.measure.protocol import Session, WorkerProcess, serve, worker_environment
from equiforce.measure.timing import interleave, summarize
from equiforce.process_exit import exit_process

__all__ = ["measure_in_subprocess"]


def _calculator(spec: Mapping[str, Any]):
    if "model" in spec:
        from equiforce.md.calculator import EquiforceCalculator

        return EquiforceCalculator(
            spec["model"], device=spec.get("device", "cpu"), compile=spec.get("compile", False)
        )
    module, _, name = spec["calculator"].partition(":")
    return getattr(importlib.import_module(module), name)(**spec.get("kwargs", {}))


def _session(spec: Mapping[str, Any]) -> Session:
    """The worker's session: the model as an ASE calculator on the structure's first frame."""
    from ase.io import read

    torch.set_num_threads(int(spec["threads"]))
    atoms = read(spec["structure_file"], index=0)
    base = atoms.positions.copy()
    atoms.calc = _calculator(spec)
    rng = np.random.default_rng(0)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        atoms.positions = base + rng.normal(0.0, 1e-3, base.shape)
        forces = atoms.get_forces()
        energy = atoms.calc.results.get("energy", math.nan)  # as computed with the forces
        return torch.tensor([energy], dtype=torch.float64), torch.from_numpy(forces)

    device = torch.device(spec.get("device", "cpu"))
    return Session(call=call, device=device, info={"n_atoms": len(atoms)})


def measure_in_subprocess(spec: Mapping[str, Any]) -> dict[str, float]:
    """Time one model in a fresh Python process (same interpreter; see the module docstring).

    Args:
        spec: ``{"model": path}`` or ``{"calculator": "module:Class", "kwargs": {...}}``, plus
            ``structure_file`` (extxyz; its first frame is used), ``calls``, ``warmup``,
            ``threads`` and optionally ``device`` and ``compile`` (equiforce models: the
            ``EquiforceCalculator`` option; compiled during the warm-up calls).

    Returns:
        ``ms_per_call``, ``ms_per_atom_step``, ``peak_memory_mb``, ``n_atoms``.

    Raises:
        equiforce.measure.protocol.WorkerError: the worker failed (its error is in the message).
    """
    command = [sys.executable, "-m", "equiforce.workflows.distill.timing", json.dumps(dict(spec))]
    label = f"timing of {spec.get('model') or spec.get('calculator')}"
    worker = WorkerProcess(command, worker_environment(int(spec["threads"])), label)
    try:
        times = interleave({"model": worker.call}, int(spec["warmup"]), int(spec["calls"]))
        memory = worker.finish()["memory"]
    finally:
        worker.close()
    ms = summarize(times["model"]).median_ms
    n_atoms = worker.info["n_atoms"]
    return {
        "ms_per_call": ms,
        "ms_per_atom_step": ms / n_atoms,
        "peak_memory_mb": memory["peak_minus_baseline_mb"],
        "n_atoms": n_atoms,
    }


if __name__ == "__main__":
    exit_process(serve(lambda: _session(json.loads(sys.argv[1])), None))
