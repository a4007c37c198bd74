"""Peak memory and time per atom of one Allegro energy + forces call, everything included.

Each size runs in a fresh process (``--worker``) that builds the preset (default the scaling
model ``allegro-tiny-al``: l_max 1, 1 layer, 32 / 8 features, r_max 4 Å, ~13.4 edges per atom
in fcc aluminium), records its resident set (interpreter, torch, model: the *baseline*), then
measures with ``equiforce.measure.MemoryProbe``

* ``neighbours``: the structure's neighbour list, graph and batch (``configuration_to_graph``
  and ``collate``, as the bench workers and the ASE calculator build them);
* ``call``: ``Potential(batch, compute_forces=True)`` in inference (a strictly local model
  runs in blocks of centre atoms above 2^14 edges), ``--repeats`` times, median wall time and
  thread CPU time (``time.thread_time``: on shared cores the wall time is mostly the wait for
  a core, so the linearity in atoms is read from the CPU time).

The *all-in* figure is the highest resident set of the process (the larger of the two
stages' peaks, both with the structure's atoms resident): what a 10^6-atom run needs of the
machine. Sizes are fcc boxes of ``4 n^3`` atoms for ``--reps`` n (14, 29, 63 -> 10,976,
97,556 and 1,000,188 atoms); before each size the per-atom figure of the previous one predicts
its peak, and a size predicted above ``--max-peak-gb`` is skipped.

    python -m benchmarks.memory_allegro --reps 14 29 --repeats 3
    python -m benchmarks.memory_allegro --reps 63 --repeats 1

Output: ``<out>/memory_allegro_<time>.json`` (run record, one entry per size) and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import git_commit, run_record

__all__ = ["main", "measure", "parser"]


def parser() -> argparse.ArgumentParser:
    """The script's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="allegro-tiny-al")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--reps", nargs="+", type=int, default=[14, 29], help="fcc cells per side")
    p.add_argument("--repeats", type=int, default=1, help="timed calls per size (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=7, help="weights and rattles")
    p.add_argument("--max-peak-gb", type=float, default=6.0)
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def measure(preset: str, dtype: str, reps: int, repeats: int, seed: int) -> dict[str, Any]:
    """One size in this process: baseline, neighbour-list and call memory, call times.

    Returns:
        ``n_atoms``, ``n_edges``, ``baseline_mb``, ``neighbours`` / ``call`` (``MemoryProbe``
        figures plus ``ms``), ``call_ms`` (every timed call), ``all_in_peak_mb``,
        ``kb_per_atom`` (all-in peak per atom), ``us_per_atom`` (median call).
    """
    import torch

    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
    from equiforce.measure.memory import MemoryProbe
    from equiforce.models.presets import preset_potential
    from equiforce.workflows.bench.systems import make_system

    potential = preset_potential(preset, dtype, seed).eval()
    (atoms,) = make_system(f"fcc-{4 * reps**3}", seed)
    cpu = torch.device("cpu")
    probe = MemoryProbe(cpu)
    probe.start()  # hands freed heap back first, then reads the resident set
    baseline_mb = probe.baseline_mb
    start = time.perf_counter()
    config = atoms_to_configuration(atoms, f"fcc {reps}")
    batch = collate([configuration_to_graph(config, potential.type_names, potential.r_max)])
    neighbours = {**probe.stop(), "ms": (time.perf_counter() - start) * 1e3}
    del config
    times, cpu_times = [], []
    probe.start()
    for _ in range(max(1, repeats)):
        start, cpu_start = time.perf_counter(), time.thread_time()
        out = potential(batch, compute_forces=True)
        cpu_times.append((time.thread_time() - cpu_start) * 1e3)
        times.append((time.perf_counter() - start) * 1e3)
        del out
    call = {**probe.stop(), "ms": statistics.median(times), "cpu_ms": statistics.median(cpu_times)}
    n_atoms = len(atoms)
    peak = max(neighbours["peak_mb"], call["peak_mb"])
    return {
        "reps": reps,
        "n_atoms": n_atoms,
        "n_edges": int(batch["edge_index"].shape[1]),
        "baseline_mb": baseline_mb,
        "neighbours": neighbours,
        "call": call,
        "call_ms": times,
        "call_cpu_ms": cpu_times,
        "all_in_peak_mb": peak,
        "kb_per_atom": peak * 1024.0 / n_atoms,
        "above_baseline_kb_per_atom": (peak - baseline_mb) * 1024.0 / n_atoms,
        "us_per_atom": call["ms"] * 1e3 / n_atoms,
        "cpu_us_per_atom": call["cpu_ms"] * 1e3 / n_atoms,
    }


def _run_worker(args: argparse.Namespace, reps: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.memory_allegro", "--worker"]
    command += ["--preset", args.preset, "--dtype", args.dtype, "--reps", str(reps)]
    command += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    command += ["--seed", str(args.seed)]
    env_threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    import os

    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **env_threads}, check=False
    )
    if done.returncode != 0:
        return {"reps": reps, "error": done.stderr[-3000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _predicted_gb(previous: dict[str, Any] | None, reps: int) -> float:
    if previous is None or "error" in previous:
        return 0.0
    per_atom = (previous["all_in_peak_mb"] - previous["baseline_mb"]) / previous["n_atoms"]
    return (previous["baseline_mb"] + per_atom * 4 * reps**3) / 1024.0


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'atoms':>10} {'edges':>11} {'call ms':>10} {'us/atom':>8} {'cpu us/atom':>11} "
        f"{'nl MB':>8} "
        f"{'call MB':>8} {'peak MB':>8} {'KB/atom':>8}"
    ]
    for r in results:
        if "error" in r or "skipped" in r:
            lines.append(f"reps {r['reps']}: {r.get('skipped') or 'failed'}")
            continue
        lines.append(
            f"{r['n_atoms']:>10,} {r['n_edges']:>11,} {r['call']['ms']:>10.1f} "
            f"{r['us_per_atom']:>8.2f} {r['cpu_us_per_atom']:>11.2f} "
            f"{r['neighbours']['peak_mb']:>8.0f} "
            f"{r['call']['peak_mb']:>8.0f} {r['all_in_peak_mb']:>8.0f} {r['kb_per_atom']:>8.2f}"
        )
    return "\n".join(lines)


def _time_exponent(results: list[dict[str, Any]], clock: str) -> float | None:
    """Log-log slope of the call's ``clock`` ("ms" or "cpu_ms") between the end sizes."""
    done = [r for r in results if "call" in r]
    if len(done) < 2:
        return None
    a, b = done[0], done[-1]
    return math.log(b["call"][clock] / a["call"][clock]) / math.log(b["n_atoms"] / a["n_atoms"])


def main(argv: list[str] | None = None) -> int:
    """Run every size in its own process (module docstring); 1 if a size failed."""
    args = parser().parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        (reps,) = args.reps
        print(json.dumps(measure(args.preset, args.dtype, reps, args.repeats, args.seed)))
        return 0
    document: dict[str, Any] = {**run_record("benchmarks.memory_allegro", argv), "results": []}
    document["commit"] = git_commit()
    document["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "worker")}
    previous = None
    for reps in sorted(args.reps):
        predicted = _predicted_gb(previous, reps)
        if predicted > args.max_peak_gb:
            result = {"reps": reps, "skipped": f"predicted peak {predicted:.1f} GB"}
        else:
            print(f"[{datetime.datetime.now():%H:%M:%S}] {4 * reps**3:,} atoms ...", flush=True)
            result = previous = _run_worker(args, reps)
        document["results"].append(result)
    document["time_exponent"] = _time_exponent(document["results"], "ms")
    document["cpu_time_exponent"] = _time_exponent(document["results"], "cpu_ms")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"memory_allegro_{stamp}.json"
    from equiforce.files import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(document, indent=1), path)
    print(_table(document["results"]))
    print(
        f"time exponent {document['time_exponent']}, CPU time exponent "
        f"{document['cpu_time_exponent']}; wrote {path}"
    )
    return 1 if any("error" in r for r in document["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
