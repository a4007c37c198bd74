"""The speed bench: time a model (and, on request, its peers on the same weights) per system.

For every system a fresh worker process per implementation builds the batch (its neighbour
list is timed once, outside the calls), then the driver alternates single calls between the
workers: ``warmup`` untimed rounds, then ``repeats`` timed ones (each after ``settle`` untimed
calls of the same implementation, when asked: timed as an MD loop runs one model step after
step, not right after the other implementation's call). Each call is timed inside its
worker by two clocks (``equiforce.measure.timing.measure_call``): wall time and the worker
process's CPU time (all its threads, so torch's intra-op threads count). A call is of one kind
(``kinds``: energy+forces inference, or a force-training step). The implementations are ours
as built (``equiforce``), any further ``variants`` of ours (compiled, other receiver chunks,
whole graph) and, on request, the peer. Reported per implementation: median wall ms and
median CPU ms per call, the first call's ms (compilation included), atoms x steps per second
and ms per atom-step (of the wall time), the peak memory of the calls (resident set on CPU,
CUDA allocator on GPU) above the worker's baseline, optionally one profiled call
(``profile``), and for peers and variants the ratios other / ours of wall time (``time``),
CPU time (``cpu_time``) and memory plus the parity of the first call. On a loaded machine
with one thread the CPU-time ratio is the one to quote: the wall time there is mostly the
wait for a core.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equiforce.measure.machine import machine_info, mem_available_gb
from equiforce.measure.protocol import WorkerError, WorkerProcess, worker_environment
from equiforce.measure.timing import CallTime, interleave, summarize
from equiforce.models import Potential, load_model, save_model
from equiforce.models.presets import preset_potential, with_dtype
from equiforce.workflows.bench.kinds import check_kind
from equiforce.workflows.bench.options import (
    Variant,
    check_backend,
    check_compile,
    is_package,
    model_dtype,
    package_precision,
    refuse_package_options,
)
from equiforce.workflows.bench.peers import PEERS, peer_for_family, peer_python
from equiforce.workflows.bench.report import extrapolated_peak_mb, scaling_exponents
from equiforce.workflows.bench.systems import (
    DEFAULT_SYSTEMS,
    make_system,
    parse_system,
    save_frames,
    system_atoms,
)

__all__ = ["OURS", "BenchConfig", "run_bench"]

OURS = "equiforce"


def _default_threads() -> int:
    return torch.get_num_threads()


@dataclass(frozen=True)
class BenchConfig:
    """Everything one bench run needs.

    Attributes:
        model: equiforce model file, or an exported package (``.pt2``, timed as exported
            through ``load_exported``: no precision, backend, compile, variants, peers or
            training steps; one structure per call, so no ``batchN`` with N > 1); exclusive
            with ``preset``.
        preset: name of a preset model with random weights (``equiforce.models.presets``).
        systems: system names (``equiforce.workflows.bench.systems``).
        precision: "float32", "float64" or a precision-policy mode; None: float32, or for a
            package the mode it was exported in (filled in here).
        backend: kernel backend for our model (None: as built).
        compile: compile our model with ``equiforce.models.compile.compile_potential``.
        kind: what a call is (``kinds``): "inference" (energy + forces), "train" (the force
            loss and its double backward) or "train-step" (that and an optimiser step).
        variants: further equiforce workers with their own model settings, interleaved with
            ours (e.g. ``Variant("compiled", compile=True)``).
        profile: after the timed calls, profile one more call of each implementation
            (``profile.profile_call``; its memory then counts towards the peak).
        peers: also run the peer framework on the same weights.
        peers_same_backward: training kinds: the peer's backward goes into its parameters
            only, as ours does (``train.step.parameter_backward``); False: its own trainers'
            ``loss.backward()`` (``kinds.plain_backward``), what its users run.
        repeats: timed calls per implementation and system (>= 1).
        warmup: untimed calls first (>= 0; >= 1 with ``compile``).
        settle: untimed calls of an implementation right before each of its timed ones
            (``measure.timing.interleave``; 0: strict alternation, each call finding the
            caches as the other implementation's process left them).
        threads: torch threads of every worker.
        device: "cpu", "cuda" or "cuda:N".
        seed: seed of preset weights and of the systems.
        peer_python: peer name -> python executable (defaults: see ``peers.peer_python``).
        max_peak_gb: skip a system (recorded as ``skipped``) when a worker's peak memory,
            extrapolated linearly in atoms from the two largest systems run before it, would
            exceed this or the memory available (None: run everything).
    """

    model: str | None = None
    preset: str | None = None
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    precision: str | None = None
    backend: str | None = None
    compile: bool = False
    kind: str = "inference"
    variants: tuple[Variant, ...] = ()
    profile: bool = False
    peers: bool = False
    peers_same_backward: bool = False
    repeats: int = 5
    warmup: int = 2
    settle: int = 0
    threads: int = field(default_factory=_default_threads)
    device: str = "cpu"
    seed: int = 0
    peer_python: dict[str, str] = field(default_factory=dict)
    max_peak_gb: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "systems", tuple(self.systems))
        object.__setattr__(self, "variants", tuple(self.variants))
        check_kind(self.kind)
        names = [OURS, *PEERS, *(v.name for v in self.variants)]
        if len(set(names)) < len(names):
            raise ValueError(f"variant names must differ from each other and from {names[:3]}")
        if (self.model is None) == (self.preset is None):
            raise ValueError("give either a model file or --preset NAME (not both)")
        if not self.systems:
            raise ValueError("no systems to run")
        parsed = {name: parse_system(name) for name in self.systems}
        if self.repeats < 1 or self.warmup < 0 or self.settle < 0:
            raise ValueError(
                "need --repeats >= 1, --warmup >= 0 and --settle >= 0, got "
                f"{self.repeats}, {self.warmup}, {self.settle}"
            )
        if (self.compile or any(v.compile for v in self.variants)) and self.warmup < 1:
            raise ValueError("--compile needs --warmup >= 1 (the first call compiles)")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but CUDA is not available")
        unknown = sorted(set(self.peer_python) - set(PEERS))
        if unknown:
            raise ValueError(f"unknown peers {unknown}; known: {sorted(PEERS)}")
        if self.kind != "inference" and any(v.export_backend for v in self.variants):
            raise ValueError(
                f"--exported: an exported package runs inference only, not {self.kind!r} calls"
            )
        batches = [s for s, (kind, n) in parsed.items() if kind in ("batch", "file") and n > 1]
        exported = is_package(self.model) or any(v.export_backend for v in self.variants)
        if exported and batches:
            raise ValueError(
                "an exported package evaluates one structure per call; systems "
                f"{batches} are batches of several (use molecule, box-N or fcc-N)"
            )
        if is_package(self.model):
            self._check_package()
        elif self.precision is None:
            object.__setattr__(self, "precision", "float32")

    def _check_package(self) -> None:
        """Refuse what a package cannot do; take its precision (``read_metadata``)."""
        from equiforce.export import read_metadata

        refuse_package_options(
            self.model,
            {
                "--precision": self.precision is not None,
                "--backend": self.backend is not None,
                "--compile": self.compile,
                "--exported (variants)": bool(self.variants),
                "--peers": self.peers,
                f"kind {self.kind!r}": self.kind != "inference",
            },
        )
        metadata = read_metadata(self.model)
        if metadata["device"] != torch.device(self.device).type:
            raise ValueError(
                f"{self.model}: compiled for device {metadata['device']!r}, the bench runs on "
                f"{self.device!r} (export again with --device, or bench with --device)"
            )
        object.__setattr__(self, "precision", package_precision(metadata))


def _package_model_report(path: str) -> dict[str, Any]:
    """The report's ``model`` entry of an exported package (from its metadata)."""
    from equiforce.export import read_metadata

    metadata = read_metadata(path)
    package = ("dtype", "precision", "device", "outputs", "torch_version", "equiforce_version")
    return {
        "source": path,
        "family": metadata["family"],
        "spec": metadata["spec"],
        "n_parameters": None,  # the weights are compiled into the package
        "package": {key: metadata.get(key) for key in package},
    }


def _source_model(config: BenchConfig) -> Potential:
    dtype = model_dtype(config.precision)
    if config.preset is not None:
        return preset_potential(config.preset, dtype, config.seed)
    return with_dtype(load_model(config.model).eval(), dtype)


def _worker_commands(config: BenchConfig, family: str, files: dict[str, Path]) -> dict:
    """Implementation name -> command line of its worker for one system."""
    common = ["--model", str(files["model"]), "--frames", str(files["frames"])]
    common += ["--device", config.device, "--threads", str(config.threads)]
    common += ["--kind", config.kind]
    ours = [sys.executable, "-m", "equiforce.workflows.bench.worker", *common]
    ours += ["--precision", config.precision]
    ours += (["--backend", config.backend] if config.backend else []) + (
        ["--compile"] if config.compile else []
    )
    commands = {
        variant.name: [
            *ours,
            *("--outputs", str(files["outputs"] / f"{variant.name}.npz")),
            *variant.worker_options(),
        ]
        for variant in (Variant(OURS), *config.variants)
    }
    if config.peers:
        peer = peer_for_family(family)
        python = peer_python(peer, config.peer_python.get(peer.name))
        commands[peer.name] = [
            python,
            *("-m", "equiforce.workflows.bench.peer_worker", "--peer", peer.name, *common),
            *("--outputs", str(files["outputs"] / f"{peer.name}.npz")),
            *(["--same-backward"] if config.peers_same_backward else []),
        ]
    return commands


def _parity(ours: Path, theirs: Path, n_atoms: np.ndarray) -> dict[str, float]:
    """Largest |dE| per atom (eV) and |dF| (eV/Å) between two first calls."""
    with np.load(ours) as a, np.load(theirs) as b:
        de = float(np.max(np.abs(a["energy"] - b["energy"]) / n_atoms))
        df = float(np.max(np.abs(a["forces"] - b["forces"])))
        scale = float(np.max(np.abs(a["forces"])))
    return {
        "max_abs_energy_diff_per_atom_eV": de,
        "max_abs_force_diff_eV_per_A": df,
        "max_abs_force_eV_per_A": scale,
    }


def _implementation_result(times: list[CallTime], finish: dict, info: dict) -> dict[str, Any]:
    stats = summarize(times)
    n_atoms = info["n_atoms"]
    profile = {"profile": finish["profile"]} if "profile" in finish else {}
    return {
        "timing": dataclasses.asdict(stats),
        "times_ms": [t.wall_ms for t in times],
        "cpu_times_ms": [t.cpu_ms for t in times],
        "atom_steps_per_s": n_atoms / (stats.median_ms / 1000.0),
        "ms_per_atom_step": stats.median_ms / n_atoms,
        "first_call_ms": finish["first_call_ms"],
        "memory": finish["memory"],
        "info": info,
        **profile,
    }


def _measure(config: BenchConfig, commands: dict[str, list[str]], name: str) -> tuple:
    """Start the workers, alternate their calls, finish them.

    A failing peer (e.g. out of memory) is dropped and the others go on; a failure of ours
    raises ``WorkerError``.

    Returns:
        ``(infos, times, memory, errors)``, each keyed by implementation; ``errors`` holds
        the failed peers' messages.
    """
    env = worker_environment(config.threads)
    workers: dict[str, WorkerProcess] = {}
    errors: dict[str, str] = {}

    def guarded(impl: str, action: Callable[[], Any]) -> Any:
        if impl in errors:
            return math.nan
        try:
            return action()
        except WorkerError as err:
            if impl == OURS:
                raise
            errors[impl] = str(err)
            return math.nan

    try:
        for impl, command in commands.items():
            label = f"{impl} on {name}"
            worker = guarded(impl, lambda c=command, label=label: WorkerProcess(c, env, label))
            if impl not in errors:
                workers[impl] = worker
        calls = {
            impl: (lambda i=impl, w=worker: guarded(i, w.call)) for impl, worker in workers.items()
        }
        times = interleave(calls, config.warmup, config.repeats, config.settle)
        profiles = {
            impl: guarded(impl, lambda w=worker: w.request("profile"))
            for impl, worker in workers.items()
            if config.profile
        }
        memory = {
            impl: guarded(impl, lambda w=worker, i=impl: {**w.finish(), **profiles.get(i, {})})
            for impl, worker in workers.items()
        }
    finally:
        for worker in workers.values():
            worker.close()
    ok = [impl for impl in workers if impl not in errors]
    infos = {impl: workers[impl].info for impl in ok}
    return infos, {i: times[i] for i in ok}, {i: memory[i] for i in ok}, errors


def _run_system(config: BenchConfig, name: str, family: str, files: dict, log) -> dict:
    frames = make_system(name, config.seed)
    save_frames(frames, files["frames"])
    n_atoms = np.array([len(a) for a in frames], dtype=np.float64)
    result: dict[str, Any] = {
        "system": name,
        "n_atoms": int(n_atoms.sum()),
        "n_graphs": len(frames),
        "mem_available_gb": mem_available_gb(),
        "load_avg": os.getloadavg(),
    }
    try:
        infos, times, memory, errors = _measure(
            config, _worker_commands(config, family, files), name
        )
    except WorkerError as err:
        log(f"  {name}: failed: {str(err)[:2000]}")
        return {**result, "error": str(err)}
    for impl, message in errors.items():
        log(f"  {name}: {impl} failed, dropped: {message[:2000]}")
    result.update(
        {
            "n_edges": infos[OURS]["n_edges"],
            "neighbour_list_ms": infos[OURS]["neighbour_list_ms"],
            "implementations": {
                impl: _implementation_result(times[impl], memory[impl], info)
                for impl, info in infos.items()
            },
            "failed": errors,
        }
    )
    ours = result["implementations"][OURS]
    result["ratios"] = {}
    for impl in infos.keys() - {OURS}:
        theirs = result["implementations"][impl]
        result["ratios"][impl] = {
            "time": theirs["timing"]["median_ms"] / ours["timing"]["median_ms"],
            "cpu_time": _ratio(theirs["timing"]["median_cpu_ms"], ours["timing"]["median_cpu_ms"]),
            "memory": _ratio(
                theirs["memory"]["peak_minus_baseline_mb"], ours["memory"]["peak_minus_baseline_mb"]
            ),
            "parity": _parity(
                files["outputs"] / f"{OURS}.npz", files["outputs"] / f"{impl}.npz", n_atoms
            ),
        }
    return result


def _skipped(config: BenchConfig, name: str, done: list[dict]) -> dict[str, Any] | None:
    """The ``skipped`` result of system ``name`` if it would exceed the memory limit, else None."""
    if config.max_peak_gb is None:
        return None
    n_atoms = system_atoms(name)
    predicted_gb = extrapolated_peak_mb(done, n_atoms) / 1024.0
    limit_gb = min(config.max_peak_gb, mem_available_gb() - 1.0)
    if predicted_gb <= limit_gb:
        return None
    message = f"skipped: predicted peak {predicted_gb:.1f} GB > limit {limit_gb:.1f} GB"
    return {"system": name, "n_atoms": n_atoms, "error": message, "skipped": True}


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the bench and return the report (see the module docstring).

    Args:
        config: what to run.
        log: receives one progress line per step.

    Returns:
        JSON-ready dict: ``date``, ``machine``, ``settings``, ``model`` (family, spec,
        source) and ``results`` (one entry per system).

    Raises:
        ValueError, FileNotFoundError: bad options, a missing model or peer environment
            (before any timing starts).
    """
    check_backend(config.backend)
    check_compile(config.compile)
    if is_package(config.model):
        potential, model_report = None, _package_model_report(config.model)
    else:
        potential = _source_model(config)
        model_report = {
            "source": config.model or f"preset {config.preset}",
            "family": potential.family,
            "spec": potential.spec_dict(),
            "n_parameters": sum(p.numel() for p in potential.parameters()),
        }
    family = model_report["family"]
    if config.peers:
        peer = peer_for_family(family)
        peer_python(peer, config.peer_python.get(peer.name))
    report: dict[str, Any] = {
        "benchmark": "equiforce bench",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": dataclasses.asdict(config),
        "model": model_report,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="equiforce-bench-") as tmp:
        files = {
            "model": Path(config.model).resolve() if potential is None else Path(tmp) / "model.pt",
            "frames": Path(tmp) / "frames.npz",
            "outputs": Path(tmp),
        }
        if potential is not None:
            save_model(potential, files["model"])
        for name in config.systems:
            skipped = _skipped(config, name, report["results"])
            if skipped is not None:
                log(f"  {name}: {skipped['error']}")
                report["results"].append(skipped)
                continue
            log(f"[{_dt.datetime.now():%H:%M:%S}] {name} ...")
            report["results"].append(_run_system(config, name, family, files, log))
    report["scaling_exponents"] = scaling_exponents(report)
    return report
