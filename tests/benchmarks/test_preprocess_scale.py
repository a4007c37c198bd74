"""Smoke test of ``python -m benchmarks.preprocess_scale``: generated labels, one small case."""

from __future__ import annotations

import numpy as np

from benchmarks.preprocess_scale import E0, SITES, SPRING, parse_args, run_case, write_structures
from equiforce.data.extxyz import read_configurations


def test_generated_structures_carry_the_harmonic_labels(tmp_path):
    path = tmp_path / "gen.xyz"
    write_structures(path, 7, chunk=3)
    configs = read_configurations(path, require_energy=True, require_forces=True)
    assert len(configs) == 7
    for config in configs:
        u = config.positions - SITES
        assert np.abs(u).max() <= 0.1 + 1e-8
        np.testing.assert_allclose(config.forces, -SPRING * u, atol=1e-7)
        e0 = sum(E0[int(z)] for z in config.atomic_numbers)
        assert abs(config.energy - e0 - 0.5 * SPRING * float((u * u).sum())) < 1e-6


def test_one_small_case_reports_memory_and_both_throughputs(tmp_path):
    args = parse_args(["--smoke"])
    assert args.sizes == [200, 2000] and args.preset == "mace-tiny"
    record = run_case(60, tmp_path / "case", batch=8, preset="mace-tiny", steps=1)
    assert record["n_structures"] == 60 and record["n_shards"] == 1
    assert record["preprocess_memory"]["peak_mb"] > 0 and record["epoch_memory"]["peak_mb"] > 0
    assert record["loader_structures_per_s"] > 0 and record["model_structures_per_s"] > 0
    assert not (tmp_path / "case" / "data.xyz").exists()
