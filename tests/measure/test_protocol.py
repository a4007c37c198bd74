"""Driver <-> worker protocol: a worker subprocess round trip, its memory figures, errors."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
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
    assert all(t.wall_ms > 0 for t in times)
    finish = worker.finish()
    memory = finish["memory"]
    assert finish["first_call_ms"] == times[0].wall_ms
    # the 200 MB block is resident during each call and freed after it
    assert 180 < memory["peak_minus_baseline_mb"] < 400
    assert memory["peak_mb"] == pytest.approx(
        memory["baseline_mb"] + memory["peak_minus_baseline_mb"]
    )
    with np.load(tmp_path / "out.npz") as outputs:
        assert outputs["energy"].tolist() == [200 * 2**20 // 8]
        assert outputs["forces"].shape == (2, 3)


def test_a_busy_call_reports_its_cpu_time_at_most_its_wall_time(tmp_path):
    """One thread busy for 40 ms of CPU: the worker reports >= 40 ms CPU, <= its wall time
    (waiting for a core on a loaded machine only adds wall time)."""
    worker = _worker(tmp_path, "--busy-ms", "40")
    times = [worker.call() for _ in range(3)]
    worker.finish()
    for t in times:
        assert 40.0 <= t.cpu_ms <= t.wall_ms * 1 + 2.0


def _served_call_times(call, n: int = 2) -> list[dict]:
    session = Session(call=call, device=torch.device("cpu"), info={})
    replies = io.StringIO()
    assert serve(lambda: session, None, io.StringIO("call\n" * n + "finish\n"), replies) == 0
    payloads = [json.loads(line[len(PREFIX) :]) for line in replies.getvalue().splitlines()]
    return payloads[1 : 1 + n]


def _result() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1), torch.zeros(1, 3)


def test_a_sleeping_call_reports_wall_time_and_almost_no_cpu_time():
    def sleep():
        time.sleep(0.05)
        return _result()

    # the process's own bookkeeping (and its other threads) costs some CPU time; on a busy
    # host that was 5.4 ms once: half the sleep still tells sleeping from working
    for reply in _served_call_times(sleep):
        assert reply["ms"] >= 50.0 and reply["cpu_ms"] < 25.0


def test_cpu_time_counts_the_work_of_the_calls_other_threads():
    """Process CPU time, not the calling thread's: work on a helper thread (as torch's
    intra-op threads do it) is counted while the caller waits for it."""
    from tests.measure.fake_worker import busy

    def call_on_a_helper_thread():
        helper = threading.Thread(target=busy, args=(30.0,))
        helper.start()
        helper.join()
        return _result()

    for reply in _served_call_times(call_on_a_helper_thread):
        assert 30.0 <= reply["cpu_ms"] <= reply["ms"] * 2 + 2.0


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
    assert '"ready"' in lines[0] and "unknown command" in lines[2]
    assert set(json.loads(lines[1][len(PREFIX) :])) == {"ms", "cpu_ms"}


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
