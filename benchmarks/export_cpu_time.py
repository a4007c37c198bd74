"""CPU time per energy + forces call: the exported package vs eager equiforce vs mace-torch.

On cores shared with other jobs a call's wall time mostly measures the wait for a core (at a
load average of 7 on 2 cores, 4x its CPU time); the CPU time the calling thread used
(``time.thread_time``, one torch thread) does not. For each molecule and dtype this script
builds the preset's MACE (random weights from ``--seed``; species H, C, O, plus N for 3BPA),
exports it (``equiforce.export.export_potential``, ``--backend``, validated as always) and
times, interleaved call by call in this process, eager equiforce (its ``fast`` kernels, as a
model file runs) and the package (as ``EquiforceCalculator`` calls it); then mace-torch on the
same weights (``equiforce.interop.to_mace_torch``, the bench's ``peers.mace_call``: the same
edges) in a child process in ``.venv-mace``, timed the same way. Wall times are recorded too;
every call is timed by ``equiforce.measure.timing`` (``measure_call`` with
``cpu_clock=time.thread_time``, ``interleave``, ``summarize``). ``--settle N`` makes N untimed
calls of an implementation before each timed one (an MD loop calls one model step after
step; with strict alternation, the default, each call finds the caches full of the other
implementation's data, which costs the smaller package more than eager).

``--md-step`` times what an MD step costs instead of the bare call: each implementation behind
its ASE calculator (``EquiforceCalculator`` over the eager model and over the package;
mace-torch's own ``MACECalculator`` over its model of the weights, with its own neighbour
list and data conversion), each on its own copy of the molecule, one step = every atom moved
(a fixed random pattern of 1 mÅ, its sign alternating so the molecule stays put, through
``Atoms.set_positions`` as ASE's integrators move atoms) then ``get_forces()``: the neighbour
list, the batch, ASE's change check and the results' conversion included. The package then
also runs Python-free in ``equiforce-run --md`` (its C++ velocity Verlet, ``--warmup +
--repeats`` steps of 0.5 fs from the molecule at rest, in a child process): its median step
(both half kicks, the drift, the neighbour list, the program call) is the ``equiforce-run``
column.

``--cpu-targets native x86-64-v3`` exports the package once per ``-march`` target
(``equiforce export --cpu-target``) and times them all in the same interleaving: what a package
for other CPUs costs on this one (``exported <target>`` in the JSON, and a table against the
first target's).

Molecules: ``acac`` (the bench's rattled acetylacetone, 15 atoms) and ``3bpa`` (the first
structure of ``<data-dir>/3bpa/train_300K.xyz``, 27 atoms).

    python -m benchmarks.export_cpu_time --molecules acac 3bpa --dtypes float32 float64 [--md-step]
        [--cpu-targets native x86-64-v3]

Output: ``<out>/export_cpu_time_<time>.json`` (run record, ``measure``: ``call`` or ``md-step``,
load average, per case the times of every implementation, ms, and the parity of the package
with eager) and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import DEFAULT_DATA_DIR, preset_with_species, require_data, run_record
from equiforce.measure.timing import CallTime, interleave, measure_call, summarize
from equiforce.models import save_model
from equiforce.models.presets import PRESETS
from equiforce.workflows.bench.report import write_json

__all__ = [
    "MOLECULE_SPECIES",
    "add_target_argument",
    "add_timing_arguments",
    "main",
    "md_step",
    "molecule",
]

MOLECULE_SPECIES = {"acac": ("H", "C", "O"), "3bpa": ("H", "C", "N", "O")}


def molecule(name: str, data_dir: Path):
    """The ``ase.Atoms`` of ``acac`` or ``3bpa`` (module docstring)."""
    if name == "acac":
        from equiforce.workflows.bench.systems import acetylacetone

        return acetylacetone(0)
    from ase.io import read

    (path,) = require_data(data_dir, "3bpa/train_300K.xyz")
    return read(path, index=0)


def thread_timed(
    calls: dict[str, Callable[[], object]], args: argparse.Namespace
) -> dict[str, list[CallTime]]:
    """``calls`` interleaved, ``args.warmup`` then ``args.repeats`` rounds, each timed call
    after ``args.settle`` untimed ones of the same implementation: name -> CallTimes.

    CPU time is the calling thread's (``time.thread_time``, the figure the docs quote).
    """
    timers = {k: partial(measure_call, c, cpu_clock=time.thread_time) for k, c in calls.items()}
    return interleave(timers, args.warmup, args.repeats, args.settle)


def md_step(calculator: Any, atoms: Any, seed: int = 0) -> Callable[[], object]:
    """One MD-like step of ``calculator`` on ``atoms`` (``--md-step``, module docstring; give
    each implementation its own copy): every atom moved by a fixed random pattern (1 mÅ rms
    per component, sign alternating), then ``get_forces()``, (n_atoms, 3) eV/Å."""
    import numpy as np

    atoms.calc = calculator
    delta = np.random.default_rng(seed).normal(scale=1e-3, size=atoms.positions.shape)
    sign = [1.0]

    def step() -> object:
        atoms.set_positions(atoms.positions + sign[0] * delta)
        sign[0] = -sign[0]
        return atoms.get_forces()

    return step


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """``--settle N`` (untimed calls of an implementation before each timed one) and
    ``--md-step`` (time ASE calculator steps, module docstring)."""
    parser.add_argument(
        "--settle",
        type=int,
        default=0,
        help="untimed calls of an implementation right before each timed one (as in MD, where "
        "one model runs step after step; 0: strict alternation, each call finding the caches "
        "full of the other implementation's data)",
    )
    parser.add_argument(
        "--md-step",
        action="store_true",
        help="time MD steps through each implementation's ASE calculator (atoms moved, then "
        "get_forces: neighbour list and conversions included) instead of bare model calls",
    )


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    """``--cpu-targets``: the package is exported once per target (``equiforce export
    --cpu-target``) and every one timed with the others."""
    parser.add_argument(
        "--cpu-targets",
        nargs="+",
        default=["native"],
        metavar="MARCH",
        help="export the package for each of these -march targets (the first is the table's "
        "'exported'; the others are timed beside it as 'exported <target>' and tabled "
        "against it, e.g. native x86-64-v3: what a package for any AVX2 CPU costs)",
    )


def target_table(cases: list[dict[str, Any]], targets: Sequence[str]) -> str:
    """Median CPU ms of the package for each of ``targets`` and their ratio to the first's."""
    first, others = targets[0], targets[1:]
    header = f"| molecule | dtype | {first} CPU ms |"
    header += "".join(f" {t} CPU ms | {t} / {first} |" for t in others)
    lines = [header, "|---" * (3 + 2 * len(others)) + "|"]
    for case in cases:
        ms = {k: v["median"] for k, v in case["cpu_ms"].items()}
        cells = [case["molecule"], case["dtype"], f"{ms['exported']:.2f}"]
        for target in others:
            other = ms[f"exported {target}"]
            cells += [f"{other:.2f}", f"{other / ms['exported']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(times: Sequence[CallTime]) -> tuple[dict[str, float], dict[str, float]]:
    """({"median", "min"} of CPU ms, the same of wall ms) over ``times``."""
    stats = summarize(times)
    cpu = {"median": stats.median_cpu_ms, "min": stats.min_cpu_ms}
    return cpu, {"median": stats.median_ms, "min": stats.min_ms}


def _child_mace(args: argparse.Namespace) -> int:
    """In ``.venv-mace``: time mace-torch on the model file's weights; JSON on stdout."""
    import mace  # noqa: F401  (mace first: it patches torch.load for e3nn 0.4.4)

    from equiforce.export.package import atoms_batch
    from equiforce.models import load_model
    from equiforce.workflows.bench.peers import mace_call, mace_model

    torch.set_num_threads(1)
    potential = load_model(args.child_model, map_location="cpu", backend="reference").eval()
    atoms = molecule(args.molecules[0], args.data_dir)
    if args.md_step:
        from mace.calculators import MACECalculator

        dtype = str(potential.dtype).removeprefix("torch.")
        model = mace_model(potential, torch.device("cpu"))
        calculator = MACECalculator(models=model, device="cpu", default_dtype=dtype)
        call = md_step(calculator, atoms.copy())
        energy = calculator.get_potential_energy(atoms)
    else:
        batch = atoms_batch(atoms, list(potential.type_names), potential.r_max, torch.device("cpu"))
        call = mace_call(potential, batch, "inference")
        energy = float(call()[0].detach().sum())
    times = thread_timed({"mace-torch": call}, args)["mace-torch"]
    cpu, wall = [t.cpu_ms for t in times], [t.wall_ms for t in times]
    print(json.dumps({"cpu_ms": cpu, "wall_ms": wall, "energy": energy}))
    return 0


def export_case(name: str, dtype: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from equiforce.export import export_potential, load_exported
    from equiforce.kernels import use_backend

    model = preset_with_species(args.preset, MOLECULE_SPECIES[name], dtype, args.seed)
    eager = use_backend(model, "fast")
    paths, export_s = {}, {}
    for target in args.cpu_targets:  # the first is "exported", the others "exported <target>"
        key = "exported" if not paths else f"exported {target}"
        paths[key] = folder / f"{name}_{dtype}_{target}.pt2"
        start = time.perf_counter()
        export_potential(model, paths[key], backend=args.backend, cpu_target=target)
        export_s[key] = time.perf_counter() - start
    packages = {key: load_exported(path) for key, path in paths.items()}
    atoms = molecule(name, args.data_dir)
    batch = packages["exported"].batch(atoms)
    if args.md_step:
        from equiforce.md.calculator import EquiforceCalculator

        calls = {"eager": md_step(EquiforceCalculator(eager), atoms.copy())}
        for key, path in paths.items():
            calls[key] = md_step(EquiforceCalculator(path), atoms.copy())
        result_runner = runner_md_step(paths["exported"], atoms, args, folder)
    else:
        result_runner = None
        calls = {"eager": lambda: eager(batch, compute_forces=True, create_graph=False)}
        calls.update({key: partial(package, batch) for key, package in packages.items()})
    summaries = {k: summary(v) for k, v in thread_timed(calls, args).items()}
    want = eager(batch, compute_forces=True, create_graph=False)
    want = {k: v.detach() for k, v in want.items()}
    parity = {}
    for key, package in packages.items():
        got = package(batch)
        tag = "" if key == "exported" else f" ({key.removeprefix('exported ')})"
        parity[f"energy_eV{tag}"] = float((got["energy"] - want["energy"]).abs().max())
        parity[f"forces_eV_per_A{tag}"] = float((got["forces"] - want["forces"]).abs().max())
    result = {
        "molecule": name,
        "dtype": dtype,
        "n_atoms": int(batch["pos"].shape[0]),
        "n_edges": int(batch["edge_index"].shape[1]),
        "export_s": export_s["exported"],
        "cpu_targets": list(args.cpu_targets),
        "parity": parity,
        "cpu_ms": {k: cpu for k, (cpu, _) in summaries.items()},
        "wall_ms": {k: wall for k, (_, wall) in summaries.items()},
    }
    if result_runner is not None:
        result["equiforce-run"] = result_runner
        result["cpu_ms"]["equiforce-run"] = {"median": result_runner["step_cpu_ms"]}
        result["wall_ms"]["equiforce-run"] = {"median": result_runner["step_wall_ms"]}
    if args.mace_python:
        model_file = save_model(model, folder / f"{name}_{dtype}.pt")
        command = [args.mace_python, "-m", "benchmarks.export_cpu_time", "--molecules", name]
        command += ["--child-model", str(model_file), "--data-dir", str(args.data_dir)]
        command += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        command += ["--settle", str(args.settle)] + ["--md-step"] * args.md_step
        peer = child_json(command)
        if "error" in peer:
            result["mace-torch"] = peer
        else:
            times = [CallTime(w, c) for c, w in zip(peer["cpu_ms"], peer["wall_ms"], strict=True)]
            result["cpu_ms"]["mace-torch"], result["wall_ms"]["mace-torch"] = summary(times)
            result["parity"]["mace_torch_energy_eV"] = abs(peer["energy"] - float(want["energy"]))
    return result


def runner_md_step(package: Path, atoms: Any, args: argparse.Namespace, folder: Path) -> dict:
    """``equiforce-run --md`` of ``package`` from ``atoms`` at rest (module docstring): the
    runner's timing line, median CPU and wall ms per step and CPU ms per program call."""
    from ase.io import write

    from equiforce.export.cpp import runner_path

    start = folder / f"{package.stem}_start.xyz"
    write(start, atoms, format="extxyz")
    steps = str(args.warmup + args.repeats)
    command = [str(runner_path()), str(package), str(start), "--md", steps, "--timestep", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command + ["--every", steps], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"equiforce-run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_json(command: list[str]) -> dict[str, Any]:
    """Run a peer child (one thread) and read the JSON of its last stdout line, or
    ``{"error": <stderr tail>}`` when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(cases: list[dict[str, Any]], peer: str, parity: tuple[tuple[str, str], ...] = ()) -> str:
    """Markdown table of median CPU ms (eager, exported, ``peer``), the ratios to the package,
    and the ``parity`` columns given as (header, key of ``case["parity"]``)."""
    header = f"| molecule | dtype | eager CPU ms | exported CPU ms | {peer} CPU ms "
    header += f"| eager / exported | {peer} / exported |"
    header += "".join(f" {title} |" for title, _ in parity)
    runner = any("equiforce-run" in case["cpu_ms"] for case in cases)
    if runner:
        header += " equiforce-run CPU ms | eager / equiforce-run |"
    lines = [header, "|---" * (7 + 2 * runner + len(parity)) + "|"]
    for case in cases:
        ms = {k: v["median"] for k, v in case["cpu_ms"].items()}
        other = ms.get(peer)
        cells = [case["molecule"], case["dtype"], f"{ms['eager']:.2f}", f"{ms['exported']:.2f}"]
        cells += ["-" if other is None else f"{other:.2f}", f"{ms['eager'] / ms['exported']:.2f}"]
        cells.append("-" if other is None else f"{other / ms['exported']:.2f}")
        if runner:
            cpp = ms["equiforce-run"]
            cells += [f"{cpp:.2f}", f"{ms['eager'] / cpp:.2f}"]
        for _, key in parity:
            value = case["parity"].get(key)
            cells.append("-" if value is None else f"{value:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Export, time and report every (molecule, dtype) case (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mace-128-l1", choices=sorted(PRESETS))
    p.add_argument("--molecules", nargs="+", default=["acac", "3bpa"], choices=MOLECULE_SPECIES)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--backend", default="fast", choices=("reference", "fast"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30)
    add_timing_arguments(p)
    add_target_argument(p)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument(
        "--mace-python",
        default=".venv-mace/bin/python",
        help="python of the mace-torch venv ('' leaves mace-torch out)",
    )
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--child-model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.child_model is not None:
        return _child_mace(args)
    if args.mace_python and not Path(args.mace_python).exists():
        raise FileNotFoundError(f"{args.mace_python} not found (make install-mace, or pass '')")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"export_cpu_time_{stamp}.json"
    document: dict[str, Any] = {**run_record("benchmarks.export_cpu_time", argv), "cases": []}
    document["measure"] = "md-step" if args.md_step else "call"
    document["load_average_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="export-cpu-time-") as scratch:
        for name in args.molecules:
            for dtype in args.dtypes:
                document["cases"].append(export_case(name, dtype, args, Path(scratch)))
                document["load_average_end"] = os.getloadavg()
                write_json(document, path)
    print(f"CPU ms per {document['measure']}")
    print(table(document["cases"], "mace-torch"))
    if len(args.cpu_targets) > 1:
        print(target_table(document["cases"], args.cpu_targets))
    print(f"load average {document['load_average_start']} -> {document['load_average_end']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
