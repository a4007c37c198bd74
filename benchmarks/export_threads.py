"""Packages compiled for 1 vs N OpenMP threads (``export_potential(threads=...)``), timed alike.

Inductor compiles a package's CPU loops for the threads it is told (``cpp.threads``; left to
itself, ``torch.get_num_threads()`` of the exporting process). This script exports one model
once per ``--export-threads`` value and times the packages interleaved call by call
(``equiforce.measure.timing``) at each ``--run-threads`` torch thread count, on one AcAc
molecule (the bench's rattled acetylacetone, 15 atoms) and on ``--grid``³ copies of it 7 Å
apart in one structure (a cluster of molecules: 960 atoms at ``--grid 4``). Energy + forces,
median wall and process CPU ms.

The model: ``--model FILE`` (an equiforce model file, e.g. a compress student), or the
preset ``--preset`` with random weights from ``--seed`` on H, C, O (timing does not depend on
the weights).

    OMP_NUM_THREADS=1 python -m benchmarks.export_threads --model student.pt \\
        --export-threads 1 2 --run-threads 1 2

Output: ``<out>/export_threads_<time>.json`` (run record, per case every package's times)
and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import preset_with_species, run_record
from benchmarks.export_cpu_time import MOLECULE_SPECIES, molecule
from equiforce.measure.timing import interleave, measure_call, summarize
from equiforce.workflows.bench.report import write_json

__all__ = ["main"]


def grid_of(atoms, n: int, spacing: float = 7.0):
    """``n``³ copies of ``atoms`` on a cubic grid ``spacing`` Å apart, as one structure."""
    copies = atoms.copy()
    for i, j, k in np.ndindex(n, n, n):
        if (i, j, k) != (0, 0, 0):
            shifted = atoms.copy()
            shifted.positions += np.array([i, j, k]) * spacing
            copies += shifted
    return copies


def _model(args: argparse.Namespace):
    if args.model is not None:
        from equiforce.models import load_model

        return load_model(args.model)
    return preset_with_species(args.preset, MOLECULE_SPECIES["acac"], args.dtype, args.seed)


def _stats(times) -> dict[str, float]:
    wall, cpu = summarize([t.wall_ms for t in times]), summarize([t.cpu_ms for t in times])
    return {"wall_ms": wall.median_ms, "wall_min_ms": wall.min_ms, "cpu_ms": cpu.median_ms}


def main(argv: list[str] | None = None) -> int:
    """Export per thread count, time every package at every run thread count."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="equiforce model file")
    p.add_argument("--preset", default="mace-128-l1", help="preset when no --model")
    p.add_argument("--dtype", default="float32", help="preset dtype")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--run-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--grid", type=int, default=4, help="copies per axis of the cluster")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=200, help="timed rounds on one molecule")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    from equiforce.export import export_potential, load_exported

    model = _model(args)
    mol = molecule("acac", Path("."))
    systems = {"molecule": mol, f"grid{args.grid}": grid_of(mol, args.grid)}
    document: dict[str, Any] = {**run_record("benchmarks.export_threads", argv), "cases": []}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"export_threads_{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="export-threads-") as scratch:
        packages = {}
        for threads in args.export_threads:
            file = Path(scratch) / f"threads{threads}.pt2"
            export_potential(model, file, threads=threads)
            packages[f"export-t{threads}"] = load_exported(file)
        for run_threads in args.run_threads:
            torch.set_num_threads(run_threads)
            for name, atoms in systems.items():
                batch = next(iter(packages.values())).batch(atoms)
                repeats = max(5, args.repeats * len(mol) // len(atoms))
                calls = {k: partial(measure_call, partial(v, batch)) for k, v in packages.items()}
                times = interleave(calls, args.warmup, repeats)
                case = {
                    "system": name,
                    "n_atoms": len(atoms),
                    "n_edges": int(batch["edge_index"].shape[1]),
                    "run_threads": run_threads,
                    "repeats": repeats,
                    "packages": {k: _stats(v) for k, v in times.items()},
                }
                document["cases"].append(case)
                write_json(document, path)
                row = ", ".join(f"{k} {v['wall_ms']:.2f}" for k, v in case["packages"].items())
                print(f"{name} ({len(atoms)} atoms), run on {run_threads} threads: {row} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
