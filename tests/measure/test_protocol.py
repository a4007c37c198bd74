"""Driver <-> worker protocol: a worker subprocess round trip, its memory figures, errors."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equiforce.measure.protocol import (
    PREFIX,
    Session,
    WorkerError,
    WorkerProcess,
    serve,
    worker_environment,
)

FAKE_WORKER = str(Path(__file__).with_name("fake_worker.py"))


def _worker(tmp_path, *options: str) -> WorkerProcess:
    command = [sys.executable, FAKE_WORKER, "--outputs", str(tmp_path / "out.npz"), *options]
    return WorkerProcess(command, worker_environment(1), "fake")


def test_worker_subprocess_reports_the_peak_memory_of_its_calls(tmp_path):
    worker = _worker(tmp_path, "--call-mb", "200")
    assert worker.info == {"n_atoms": 2}
    times = [worker.call() for _ in range(2)]
    assert all(t > 0 for t in times)
    finish = worker.finish()
    memory = finish["memory"]
    assert finish["first_call_ms"] == times[0]
    # the 200 MB block is resident during each call and freed after it
    assert 180 < memory["peak_minus_baseline_mb"] < 400
    assert memory["peak_mb"] == pytest.approx(
        memory["baseline_mb"] + memory["peak_minus_baseline_mb"]
    )
    with np.load(tmp_path / "out.npz") as outputs:
        assert outputs["energy"].tolist() == [200 * 2**20 // 8]
        assert outputs["forces"].shape == (2, 3)


def test_worker_without_allocation_reports_little_memory(tmp_path):
    worker = _worker(tmp_path)
    worker.call()
    assert worker.finish()["memory"]["peak_minus_baseline_mb"] < 50


def test_a_failing_worker_raises_with_its_error(tmp_path):
    with pytest.raises(WorkerError, match="model file is broken"):
        _worker(tmp_path, "--fail")


def test_serve_answers_commands_and_rejects_unknown_ones(tmp_path):
    session = Session(
        call=lambda: (torch.zeros(1), torch.zeros(1, 3)), device=torch.device("cpu"), info={}
    )
    replies = io.StringIO()
    status = serve(lambda: session, str(tmp_path / "o.npz"), io.StringIO("call\njump\n"), replies)
    lines = [line for line in replies.getvalue().splitlines() if line.startswith(PREFIX)]
    assert status == 1 and len(lines) == 3
    assert '"ready"' in lines[0] and '"ms"' in lines[1] and "unknown command" in lines[2]


def test_serve_answers_the_sessions_own_commands_and_keeps_no_outputs_without_a_path():
    session = Session(
        call=lambda: (torch.zeros(1), torch.zeros(1, 3)),
        device=torch.device("cpu"),
        info={},
        commands={"profile": lambda: {"profile": {"ops": 3}}},
    )
    replies = io.StringIO()
    status = serve(lambda: session, None, io.StringIO("call\nprofile\nfinish\n"), replies)
    payloads = [
        json.loads(line[len(PREFIX) :])
        for line in replies.getvalue().splitlines()
        if line.startswith(PREFIX)
    ]
    assert status == 0
    assert payloads[2] == {"profile": {"ops": 3}} and payloads[3]["first_call_ms"] > 0
