"""``--sweep``: every student trained, reported and on the Pareto plot; parallel = serial."""

from __future__ import annotations

import json

import pytest
import torch

from equiforce.models.io import load_model
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.run import distill
from tests.workflows.distill.conftest import distill_dict

STUDENTS = [{"num_channels": 4}, {"num_channels": 8}]


def _sweep(tmp_path, emt_files, name, **sweep):
    values = distill_dict(
        tmp_path / name,
        emt_files,
        labels={"save_every": 4, "cache_dir": str(tmp_path / "labels")},
        sweep={"students": STUDENTS, **sweep},
    )
    return distill(DistillConfig.from_dict(values), sweep=True, progress=False)


@pytest.fixture(scope="module")
def serial_and_parallel(tmp_path_factory, emt_files):
    """The same two-student sweep run one student at a time and two at a time."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the parallel workers: identical float64 sums
    try:
        serial = _sweep(tmp_path, emt_files, "serial")
    finally:
        torch.set_num_threads(torch_threads)
    parallel = _sweep(tmp_path, emt_files, "parallel", jobs=2, threads_per_job=1)
    return serial, parallel


def test_sweep_reports_every_student_and_draws_the_pareto_plot(serial_and_parallel):
    """The report has the teacher and both students, timed; the Pareto files exist."""
    result = serial_and_parallel[0]
    assert [row["name"] for row in result.rows] == ["teacher", "num_channels-4", "num_channels-8"]
    for row in result.rows:
        assert row["ms_per_call"] > 0 and row["test_forces_rmse"] > 0
    assert result.pareto_png.stat().st_size > 0
    assert len(json.loads(result.pareto_json.read_text())) == 3


def test_parallel_sweep_trains_the_same_students(serial_and_parallel):
    """Two students at a time in worker processes give the serial run's models and errors."""
    serial, parallel = serial_and_parallel
    for one, other in zip(serial.rows[1:], parallel.rows[1:], strict=True):
        assert other["name"] == one["name"] and other["ms_per_call"] > 0
        assert other["test_forces_rmse"] == pytest.approx(one["test_forces_rmse"], rel=1e-9)
        a, b = load_model(one["model_path"]), load_model(other["model_path"])
        for key, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-10, atol=1e-12)
