"""Driver <-> worker protocol: a call timed and its memory measured in a fresh process.

``equiforce bench`` starts one worker per (implementation, model, system) point and
distillation one per model it times (``workflows.distill.timing``); a fresh process keeps the
memory of other models and points out of the figures.

A worker builds its model and batch, then answers commands on stdin, one per line:
``call`` (one timed energy+forces call; the reply carries its wall ms, ``ms``, and the
worker process's CPU ms over the call, ``cpu_ms``: ``timing.measure_call``, both clocks read
inside the worker around the call alone, so pipe traffic and the driver are not counted) and
``finish`` (the reply carries the peak memory of the calls and the first call's ms,
compilation included; the first call's energies and forces go to the ``--outputs`` file for
the parity check), plus any further commands the session names (``Session.commands``, e.g.
the bench's ``profile``).
Replies are JSON lines on stdout prefixed with ``@measure ``, so that anything a library
prints is ignored. Because the driver sends one command at a time and a worker waits idle
between commands, two workers alternate without competing for the CPU, which lets the
driver interleave ours and a peer call by call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch

from equiforce.measure.memory import MemoryProbe
from equiforce.measure.timing import CallTime, device_sync, measure_call

__all__ = ["PREFIX", "Session", "WorkerError", "WorkerProcess", "serve", "worker_environment"]

PREFIX = "@measure "


@dataclass
class Session:
    """What a worker serves: one prepared model and batch.

    Attributes:
        call: one energy+forces evaluation, returning ``(energy (n_graphs,), forces
            (n_atoms, 3))`` tensors.
        device: where it runs (CUDA calls are synchronised around the clock).
        info: facts reported once when ready (atoms, edges, neighbour-list ms, versions...).
        commands: further commands the worker answers: name -> function returning the
            reply's JSON payload (``WorkerProcess.request``).
    """

    call: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    device: torch.device
    info: dict[str, Any]
    commands: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)


def _reply(stream: IO[str], payload: dict[str, Any]) -> None:
    stream.write(PREFIX + json.dumps(payload) + "\n")
    stream.flush()


def serve(
    prepare: Callable[[], Session],
    outputs_path: str | None,
    commands: IO[str] = sys.stdin,
    replies: IO[str] = sys.stdout,
) -> int:
    """Run the worker side: prepare, reply ``ready``, then answer commands until ``finish``.

    Args:
        prepare: builds the session (its errors are reported to the driver, not raised).
        outputs_path: ``.npz`` file receiving the first call's energy and forces (float64);
            None: not kept.
        commands: command stream (stdin).
        replies: reply stream (stdout).

    Returns:
        Process exit status (0 after ``finish``, 1 after an error).
    """
    try:
        session = prepare()
    except Exception as err:  # noqa: BLE001  (any failure goes to the driver, with its trace)
        _reply(replies, {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()})
        return 1
    _reply(replies, {"ready": session.info})
    sync = device_sync(session.device)
    probe = MemoryProbe(session.device)
    first: list[tuple[torch.Tensor, torch.Tensor]] = []
    first_ms: list[float] = []

    def one_call() -> None:
        energy, forces = session.call()
        if not first:
            first.append((energy.detach(), forces.detach()))

    for line in commands:
        command = line.strip()
        try:
            if command == "call":
                if not first:
                    probe.start()
                elapsed = measure_call(one_call, sync)
                first_ms[:] = first_ms or [elapsed.wall_ms]
                _reply(replies, {"ms": elapsed.wall_ms, "cpu_ms": elapsed.cpu_ms})
            elif command == "finish":
                memory = probe.stop()
                if outputs_path is not None:
                    energy, forces = (t.to("cpu", torch.float64).numpy() for t in first[0])
                    np.savez(outputs_path, energy=energy, forces=forces)
                _reply(replies, {"memory": memory, "first_call_ms": first_ms[0]})
                return 0
            elif command in session.commands:
                _reply(replies, session.commands[command]())
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as err:  # noqa: BLE001
            _reply(
                replies, {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
            )
            return 1
    return 1


class WorkerError(RuntimeError):
    """A worker failed; the message carries its error and the tail of its stderr."""


class WorkerProcess:
    """Driver side of one worker process.

    Args:
        command: the worker's command line (e.g.
            ``[python, -m, equiforce.workflows.bench.worker, ...]``).
        env: its environment.
        label: name used in error messages.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str], label: str):
        self.label = label
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.info: dict[str, Any] = self._read()["ready"]

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(PREFIX):
                reply = json.loads(line[len(PREFIX) :])
                if "error" in reply:
                    self.close()
                    raise WorkerError(f"{self.label}: {reply['error']}\n{reply.get('trace', '')}")
                return reply
        self.close()
        raise WorkerError(f"{self.label}: worker exited without replying\n{self._stderr_tail()}")

    def _send(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self.close()
            raise WorkerError(f"{self.label}: worker died\n{self._stderr_tail()}") from None
        return self._read()

    def call(self) -> CallTime:
        """One timed call; its wall time and the worker's CPU time, ms (measured inside the
        worker around the call)."""
        reply = self._send("call")
        return CallTime(wall_ms=float(reply["ms"]), cpu_ms=float(reply["cpu_ms"]))

    def request(self, command: str) -> dict[str, Any]:
        """One of the worker's further commands (``Session.commands``); its reply."""
        return self._send(command)

    def finish(self) -> dict[str, Any]:
        """End the worker; its memory figures (``memory``) and ``first_call_ms``."""
        reply = self._send("finish")
        self.close()
        return reply

    def _stderr_tail(self, chars: int = 3000) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-chars:]

    def close(self) -> None:
        """Stop the process (if still running) and release its pipes."""
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def worker_environment(threads: int) -> dict[str, str]:
    """This process's environment with the thread count set for OpenMP and MKL."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
