"""MACE on a GPU: equiforce vs mace-torch, each with and without cuEquivariance, same weights.

Issue 18's prepared script for a lent GPU machine: one run of at most ~10 minutes
(``benchmarks/gpu/run_on_device.sh`` installs what the machine lacks and calls it). On water
boxes of 10^3-10^5 atoms (the bench's ``box-N``), for each call kind (``inference``: energy
+ forces; ``train``: the bench's training call, the force loss's double backward, no
optimiser), it times in one process, calls interleaved round by round, on the preset's random
weights (``--preset``, default ``mace-128-l1``; species H, O):

* ``equiforce <precision>``: the model as built (``fast`` kernels: torch operations on CUDA),
  for each ``--precisions`` mode (float32, bf16-mixed, ...; ``equiforce.precision``);
* ``equiforce-cueq <precision>``: the same with the ``cueq`` kernel backend (the edge
  convolution in cuEquivariance's fused ``uniform_1d`` kernel);
* ``mace-torch float32``: ``equiforce.interop.to_mace_torch`` of the same weights (e3nn);
* ``mace-torch-cueq float32``: mace-torch's own cuEquivariance model of those weights
  (``mace.cli.convert_e3nn_cueq``, fused convolution on CUDA; ``peers.mace_model``).

All read the same edges (``peers.mace_call``). An implementation whose package is missing is
recorded as unavailable with the reason; one that runs out of memory on a system is recorded
as ``out of memory`` there and the others go on. Every call is timed with the device
synchronised (``measure_call``), median of ``--repeats`` after ``--warmup`` rounds; the
first call's peak device memory (``MemoryProbe``), its energy and forces against
``equiforce float32`` (parity: max |dE| per atom, max and RMS |dF|) are recorded. ``--budget-s``
bounds the whole run: each case gets an equal share of what is left, and its rounds are cut
to fit (the number run is recorded); cases that no longer fit are skipped, not guessed.

    python -m benchmarks.gpu_mace --device cuda --sizes 1000 10000 100000

Output: ``<out>/gpu_mace_<time>.json`` (run record with the GPU's name, versions, and per case
every implementation's times, memory and parity; rewritten after each case) and a table
on stdout with the ratios ``other / equiforce`` (above 1: equiforce is faster).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import add_common_arguments, preset_with_species, run_record
from equiforce.data import keys
from equiforce.data.batch import batch_to, collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.measure.memory import MemoryProbe
from equiforce.measure.timing import device_sync, interleave, measure_call, summarize
from equiforce.workflows.bench.kinds import potential_call
from equiforce.workflows.bench.report import write_json
from equiforce.workflows.bench.systems import make_system

__all__ = ["IMPLEMENTATIONS", "main"]

SPECIES = ("H", "O")
IMPLEMENTATIONS = ("equiforce", "equiforce-cueq", "mace-torch", "mace-torch-cueq")
REFERENCE = "equiforce float32"
_VERSIONS = ("torch", "cuequivariance-torch", "cuequivariance-ops-torch-cu13", "mace-torch")


def _versions() -> dict[str, str]:
    """Installed versions of the packages the comparison depends on (absent: None)."""
    found = {}
    for name in _VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _in_precision(call: Callable[[], Any], precision: str) -> Callable[[], Any]:
    """``call`` inside ``precision``'s scope (its float32 matmul precision, as the bench's
    worker runs a mode: ``equiforce.precision.precision_scope``)."""
    from equiforce.precision import from_name, precision_scope

    policy = from_name(precision)

    def scoped():
        with precision_scope(policy):
            return call()

    return scoped


def _models(potential, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """name -> model of every implementation asked for (built once per run), and name -> why
    it is unavailable (a missing package)."""
    from equiforce.workflows.bench.options import apply_backend, apply_precision
    from equiforce.workflows.bench.peers import mace_model

    builders: dict[str, Callable[[], Any]] = {}
    for precision in args.precisions:
        for name, backend in (("equiforce", None), ("equiforce-cueq", "cueq")):
            if name in args.impls:
                builders[f"{name} {precision}"] = lambda p=precision, b=backend: apply_backend(
                    apply_precision(copy.deepcopy(potential), p), b
                )
    for name, cueq in (("mace-torch", False), ("mace-torch-cueq", True)):
        if name in args.impls:
            builders[f"{name} float32"] = lambda c=cueq: mace_model(potential, potential.device, c)
    models, unavailable = {}, {}
    for name, build in builders.items():
        try:
            models[name] = build()
        except Exception as err:  # noqa: BLE001  (a missing package: record why, go on)
            unavailable[name] = f"{type(err).__name__}: {err}"
    return models, unavailable


def _calls(models: dict[str, Any], potential, batch, kind: str) -> dict[str, Callable[[], Any]]:
    """name -> one call of ``kind`` on ``batch`` of each model, in its precision's scope."""
    from equiforce.workflows.bench.peers import mace_call

    calls = {}
    for name, model in models.items():
        implementation, precision = name.split(" ")
        if implementation.startswith("mace-torch"):
            call = mace_call(potential, batch, kind, model=model)
        else:
            call = potential_call(model, batch, kind)
        calls[name] = _in_precision(call, precision)
    return calls


def _parity(reference, outputs, n_atoms: int) -> dict[str, float]:
    """Energy and force differences of ``outputs`` from ``reference`` (eV, eV/Å)."""
    (e0, f0), (e1, f1) = reference, outputs
    df = (f1.double() - f0.double()).cpu()
    return {
        "max_abs_energy_diff_eV_per_atom": float((e1.double() - e0.double()).abs().max()) / n_atoms,
        "max_abs_force_diff_eV_per_A": float(df.abs().max()),
        "rms_force_diff_eV_per_A": float(df.pow(2).mean().sqrt()),
    }


def _probe(calls, device: torch.device, n_atoms: int) -> tuple[dict, dict[str, dict]]:
    """Two calls of each implementation: the first's outputs and peak memory, both wall ms
    (the first pays for lazy set-up: cuEquivariance's kernel compilation, allocator growth);
    implementations that fail are dropped from ``calls`` and reported."""
    sync = device_sync(device)

    def timed(call) -> tuple[float, Any]:
        start = time.perf_counter()
        out = call()
        if sync is not None:
            sync()
        return (time.perf_counter() - start) * 1000.0, out

    outputs, report = {}, {}
    for name in list(calls):
        probe = MemoryProbe(device)
        try:
            probe.start()
            first_ms, (energy, forces) = timed(calls[name])
            memory = probe.stop()
            second_ms, _ = timed(calls[name])
        except Exception as err:  # noqa: BLE001  (out of memory, a kernel's limits: go on)
            del calls[name]
            _release(device)
            reason = "out of memory" if _is_out_of_memory(err) else f"{type(err).__name__}: {err}"
            report[name] = {"error": reason}
            continue
        outputs[name] = (energy.detach(), forces.detach())
        report[name] = {
            "first_call_ms": first_ms,
            "second_call_ms": second_ms,
            "peak_memory_mb": memory["peak_minus_baseline_mb"],
            "memory_source": memory["source"],
        }
    reference = outputs.get(REFERENCE)
    for name, out in outputs.items():
        if reference is not None and name != REFERENCE:
            report[name]["parity_vs_" + REFERENCE.replace(" ", "_")] = _parity(
                reference, out, n_atoms
            )
    return outputs, report


def _batch(size: int, r_max: float, device: torch.device):
    (atoms,) = make_system(f"box-{size}")
    graph = configuration_to_graph(atoms_to_configuration(atoms, f"box-{size}"), SPECIES, r_max)
    return batch_to(collate([graph]), device), len(atoms)


def run_case(
    models: dict[str, Any], potential, size: int, kind: str, args, budget_s: float
) -> dict[str, Any]:
    """Time every model (``_models``) on the water box of ``size`` atoms, calls of ``kind``."""
    device = torch.device(args.device)
    batch, n_atoms = _batch(size, potential.r_max, device)
    case = {
        "system": f"box-{size}",
        "n_atoms": n_atoms,
        "n_edges": int(batch[keys.EDGE_INDEX].shape[1]),
        "kind": kind,
    }
    calls = _calls(models, potential, batch, kind)
    started = time.perf_counter()
    _, implementations = _probe(calls, device, n_atoms)
    round_s = sum(implementations[name]["second_call_ms"] for name in calls) / 1000.0
    left = budget_s - (time.perf_counter() - started)
    rounds = int(left / round_s) if round_s > 0 else args.warmup + args.repeats
    warmup = min(args.warmup, max(rounds - 1, 0))
    repeats = min(args.repeats, rounds - warmup)
    case.update({"warmup": warmup, "repeats": max(repeats, 0)})
    if calls and repeats >= 1:
        sync = device_sync(device)
        timers = {name: (lambda c=c: measure_call(c, sync=sync)) for name, c in calls.items()}
        for name, times in interleave(timers, warmup, repeats).items():
            stats = summarize(times)
            implementations[name].update(
                {
                    "median_ms": stats.median_ms,
                    "min_ms": stats.min_ms,
                    "ms": [t.wall_ms for t in times],
                }
            )
    case["implementations"] = implementations
    case["ratios"] = _ratios(implementations)
    del calls, batch
    _release(device)
    return case


def _ratios(implementations: dict[str, dict]) -> dict[str, float]:
    """``"<other> / <ours>"`` -> median-time ratio for each mace-torch and equiforce pair."""
    timed = {k: v["median_ms"] for k, v in implementations.items() if "median_ms" in v}
    return {
        f"{other} / {ours}": timed[other] / timed[ours]
        for other in timed
        if other.startswith("mace-torch")
        for ours in timed
        if ours.startswith("equiforce")
    }


def _format(case: dict[str, Any]) -> str:
    lines = [f"{case['system']} ({case['n_atoms']} atoms, {case['n_edges']} edges), {case['kind']}"]
    for name, result in case["implementations"].items():
        if "median_ms" in result:
            parity = next((v for k, v in result.items() if k.startswith("parity")), None)
            diff = f"  dF max {parity['max_abs_force_diff_eV_per_A']:.1e} eV/Å" if parity else ""
            lines.append(
                f"  {name:28s} {result['median_ms']:10.2f} ms  "
                f"{result['peak_memory_mb']:9.0f} MB{diff}"
            )
        else:
            lines.append(f"  {name:28s} {result.get('error', 'not timed')}")
    lines += [f"  {k}: {v:.2f}" for k, v in case["ratios"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="mace-128-l1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--kinds", nargs="+", default=["inference", "train"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bf16-mixed"])
    parser.add_argument(
        "--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=360.0, help="whole run's time bound")
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser, "bench_out/gpu_mace")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    potential = preset_with_species(args.preset, SPECIES, "float32", args.seed).to(device)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) / f"gpu_mace_{stamp}.json"
    document = {
        **run_record("benchmarks.gpu_mace", argv),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "versions": _versions(),
        "preset": args.preset,
        "cases": [],
    }
    models, unavailable = _models(potential, args)
    document["unavailable"] = unavailable
    for name, reason in unavailable.items():
        print(f"{name}: unavailable ({reason})", flush=True)
    cases = [(size, kind) for size in args.sizes for kind in args.kinds]
    for index, (size, kind) in enumerate(cases):
        left = args.budget_s - (time.perf_counter() - started)
        share = left / (len(cases) - index)
        if share <= 0:
            document["cases"].append({"system": f"box-{size}", "kind": kind, "skipped": "budget"})
            continue
        case = run_case(models, potential, size, kind, args, share)
        document["cases"].append(case)
        write_json(document, path)
        print(_format(case), flush=True)
    write_json(document, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
