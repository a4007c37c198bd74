"""``benchmarks.distill_ranks``: its distillation parses and its log is split into phases.

The runs themselves (three distillations, one of them on two ranks) take minutes; the
two-rank distillation is tested in ``tests/workflows/distill/test_distill_ranks.py``.
"""

from __future__ import annotations

import argparse

import pytest

from benchmarks.distill_ranks import _config, _phases
from equiforce.workflows.distill.config import DistillConfig


def test_the_benchmark_distillation_is_a_valid_config(tmp_path):
    args = argparse.Namespace(snapshots=3, hessian=2, epochs=1)
    files = {name: tmp_path / f"{name}.xyz" for name in ("train", "valid", "test")}
    config = DistillConfig.from_dict(_config(tmp_path / "out", files, tmp_path / "t.pt", args))
    assert config.losses.hessian_structures == 2 and config.augment.md.n_snapshots == 3
    assert config.student.params["num_channels"] > 0


def test_phases_come_from_the_log_stamps():
    log = "\n".join(
        [
            "2026-12-06 13:00:00,000 teacher model t.pt",
            "torch warning without a stamp",
            "2026-12-06 13:00:04,500 student data: {'train': 40}",
            "2026-12-06 13:00:05,000 epoch 1 ...",
            "2026-12-06 13:00:09,250 epoch 2 ...",
            "2026-12-06 13:00:10,000 report written",
        ]
    )
    phases = _phases(log, 12.0)
    assert phases["teacher_work_s"] == pytest.approx(4.5)
    assert phases["student_s"] == pytest.approx(4.75)
    assert phases["wall_s"] == 12.0
