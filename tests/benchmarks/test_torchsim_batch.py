"""Smoke test of ``python -m benchmarks.torchsim_batch``: batched TorchSim vs ASE one by one."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch_sim")

from benchmarks.torchsim_batch import main  # noqa: E402


def test_torchsim_batch_times_both_paths_and_checks_parity(tmp_path):
    argv = ["--n-structures", "3", "--repeats", "1", "2", "--relax-steps", "2"]
    argv += ["--md-steps", "2", "--npt-steps", "2", "--timing-repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    document = json.loads(next(tmp_path.glob("torchsim_batch_*.json")).read_text())
    assert document["command"].startswith("python -m benchmarks.torchsim_batch")
    case = document["cases"]["allegro-tiny-al"]
    assert case["atoms"] == [4, 32, 4]
    assert case["max_abs_energy_diff_eV"] < 1e-10
    for kind in ("relax", "md", "npt_mtk", "npt_berendsen"):
        assert case[kind]["batched_s"] > 0 and case[kind]["serial_s"] > 0
        assert case[kind]["speedup"] == pytest.approx(
            case[kind]["serial_s"] / case[kind]["batched_s"]
        )


def test_torchsim_batch_slabs(tmp_path):
    """``--slabs``: fcc(111) slabs with a fixed bottom layer, relax and MD only."""
    argv = ["--slabs", "--n-structures", "2", "--repeats", "1", "2", "--relax-steps", "2"]
    argv += ["--md-steps", "2", "--timing-repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    document = json.loads(next(tmp_path.glob("torchsim_batch_*.json")).read_text())
    case = document["cases"]["allegro-tiny-al"]
    assert document["slabs"] and case["atoms"] == [4, 16]
    assert case["max_abs_energy_diff_eV"] < 1e-10 and set(case) >= {"relax", "md"}
    assert "npt_mtk" not in case
