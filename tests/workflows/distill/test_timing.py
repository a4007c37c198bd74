"""Distillation's timing: a fresh ``equiforce.measure`` worker giving bench's figures."""

from __future__ import annotations

import math

import pytest
from ase.build import bulk
from ase.io import write

from equiforce.workflows.distill.timing import measure_in_subprocess


def test_a_calculator_is_timed_in_a_worker_with_the_bench_memory_figure(tmp_path):
    structure = tmp_path / "cu.xyz"
    write(structure, bulk("Cu", "fcc", 3.6, cubic=True).repeat(2))
    spec = {"calculator": "ase.calculators.emt:EMT", "structure_file": str(structure)}
    timing = measure_in_subprocess({**spec, "calls": 3, "warmup": 1, "threads": 1})
    assert timing["n_atoms"] == 32 and timing["ms_per_call"] > 0
    assert timing["ms_per_atom_step"] == pytest.approx(timing["ms_per_call"] / 32)
    # EMT on 32 atoms allocates next to nothing beyond the resident calculator
    assert math.isfinite(timing["peak_memory_mb"]) and timing["peak_memory_mb"] < 50
