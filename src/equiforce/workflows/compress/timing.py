"""Timing of one model under execution variants: the bench's worker, ``equiforce.measure``.

Each variant (kernel backend, compiled or not, exported or not, torch threads) runs in its own
fresh process, ``python -m equiforce.workflows.bench.worker`` (the worker ``equiforce bench``
times with: it loads the model file in a precision mode, switches the backend, compiles with
``equiforce.models.compile`` or exports with ``equiforce.export`` and times the loaded
``.pt2``), serving ``equiforce.measure.protocol``. The workers are started one after another
(a progress step each: compiling and exporting happen here and in the warm-up), then their
calls alternate (``equiforce.measure.timing.interleave``: ``warmup`` untimed rounds, ``repeats``
timed ones) so that outside load hits every variant alike. Reported per variant: the median
wall ms and the median CPU ms of the worker process per energy+forces call on the target, the
peak memory of the calls over the worker's baseline
(MB, ``MemoryProbe``) and the first call's ms. A variant whose worker fails (e.g. an export
refused, a peer's Python missing) is reported with its ``error`` and left out of the race.
A peer variant runs the same weights in mace-torch or nequip-allegro through the bench's peer
worker (``equiforce.workflows.bench.peer_worker``), in the peer's own Python, on the same
structures and neighbour list.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from equiforce.measure.protocol import WorkerError, WorkerProcess, worker_environment
from equiforce.measure.timing import CallTime, interleave, summarize
from equiforce.workflows.bench import peers as bench_peers

__all__ = ["ExecVariant", "time_variants"]


@dataclass(frozen=True)
class ExecVariant:
    """How a model file is run (its precision mode is chosen separately).

    Attributes:
        backend: kernel backend of the executors (``equiforce.kernels``: ``reference``,
            ``fast``, ``cueq``).
        compile: run through ``compile_potential`` (Inductor).
        export: run the exported ``.pt2`` package traced with ``backend``.
        threads: torch threads.
        peer: run the model's weights in this peer framework instead (a name of
            ``equiforce.workflows.bench.peers.PEERS``, e.g. ``mace-torch``), in the model's
            own dtype and in the peer's Python (``backend``, ``compile``, ``export`` unused).
    """

    backend: str
    compile: bool = False
    export: bool = False
    threads: int = 1
    peer: str | None = None

    @property
    def label(self) -> str:
        """Short name, e.g. ``exported-reference-t1`` or ``mace-torch-t1``."""
        if self.peer is not None:
            return f"{self.peer}-t{self.threads}"
        kind = "exported" if self.export else "compiled" if self.compile else "eager"
        return f"{kind}-{self.backend}-t{self.threads}"

    def worker_options(self) -> list[str]:
        """This variant's options of ``python -m equiforce.workflows.bench.worker`` (or of
        the peer worker)."""
        if self.peer is not None:
            return ["--peer", self.peer, "--threads", str(self.threads)]
        options = ["--backend", self.backend, "--threads", str(self.threads)]
        options += ["--compile"] if self.compile else []
        return options + (["--export-backend", self.backend] if self.export else [])


def _command(
    model: Path,
    mode: str,
    frames: Path,
    outputs: Path,
    variant: ExecVariant,
    peer_python: str | None,
) -> list[str]:
    files = ("--model", str(model), "--frames", str(frames), "--outputs", str(outputs))
    if variant.peer is not None:
        python = bench_peers.peer_python(bench_peers.PEERS[variant.peer], peer_python)
        module = "equiforce.workflows.bench.peer_worker"
        return [python, "-m", module, *files, *variant.worker_options()]
    return [
        sys.executable,
        *("-m", "equiforce.workflows.bench.worker"),
        *files,
        *("--precision", mode, *variant.worker_options()),
    ]


def time_variants(
    model_file: str | Path,
    mode: str,
    frames_file: str | Path,
    variants: Sequence[ExecVariant],
    warmup: int,
    repeats: int,
    scratch: str | Path,
    step: Callable[[str], None] = lambda label: None,
    peer_python: str | None = None,
) -> list[dict[str, Any]]:
    """Time ``model_file`` in precision ``mode`` under every variant (module docstring).

    Args:
        model_file: equiforce model file.
        mode: precision mode the worker runs it in (``equiforce.precision.MODES``).
        frames_file: target structures (``targets.write_target``).
        variants: execution variants.
        warmup, repeats: untimed and timed rounds.
        scratch: folder for the workers' first-call outputs.
        step: called with a variant's label once its worker is ready (progress).
        peer_python: the Python of a peer variant (None: the peer's default, see
            ``equiforce.workflows.bench.peers.peer_python``).

    Returns:
        One row per variant, in order: ``variant`` (its fields), ``label``, and either
        ``ms_per_call`` (median wall ms), ``cpu_ms_per_call`` (median CPU ms of the worker
        process, ``equiforce.measure.timing.measure_call``), ``min_ms``, ``first_call_ms``,
        ``peak_memory_mb``, ``n_atoms`` or ``error``.
    """
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    rows = {v.label: {"variant": asdict(v), "label": v.label} for v in variants}
    workers: dict[str, WorkerProcess] = {}
    try:
        for variant in variants:
            try:
                command = _command(
                    Path(model_file),
                    mode,
                    Path(frames_file),
                    scratch / f"{variant.label}.npz",
                    variant,
                    peer_python,
                )
                env = worker_environment(variant.threads)
                workers[variant.label] = WorkerProcess(command, env, f"{mode} {variant.label}")
            except (WorkerError, FileNotFoundError) as err:
                rows[variant.label]["error"] = _first_line(err)
            step(variant.label)
        times = interleave(_guarded_calls(workers, rows), warmup, repeats)
        for label, worker in list(workers.items()):
            if "error" in rows[label]:
                continue
            try:
                finish = worker.finish()
            except WorkerError as err:
                rows[label]["error"] = _first_line(err)
                continue
            stats = summarize(times[label])
            rows[label].update(
                ms_per_call=stats.median_ms,
                cpu_ms_per_call=stats.median_cpu_ms,
                min_ms=stats.min_ms,
                first_call_ms=finish["first_call_ms"],
                peak_memory_mb=finish["memory"]["peak_minus_baseline_mb"],
                n_atoms=worker.info["n_atoms"],
            )
    finally:
        for worker in workers.values():
            worker.close()
    return [rows[v.label] for v in variants]


def _guarded_calls(
    workers: dict[str, WorkerProcess], rows: dict[str, dict[str, Any]]
) -> dict[str, Callable[[], CallTime | float]]:
    """Call functions that record a worker's failure instead of raising (NaN from then on)."""

    def call(label: str) -> CallTime | float:
        if "error" in rows[label]:
            return math.nan
        try:
            return workers[label].call()
        except WorkerError as err:
            rows[label]["error"] = _first_line(err)
            return math.nan

    return {label: (lambda label=label: call(label)) for label in workers}


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    # the worker's message is ``label: Type: text`` followed by its trace
    return lines[0][:500] if lines else type(err).__name__
