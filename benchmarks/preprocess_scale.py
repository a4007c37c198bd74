"""Datasets larger than memory: preprocess N structures, then one epoch of loading, per size.

For each size in ``--sizes`` (default 20,000 and 200,000) a fresh process

1. writes N generated 4-atom Cu/Au fcc cells (cubic, a = 3.6 Å, rattled by up to 0.1 Å) as
   extxyz, labelled by a cheap harmonic formula (forces ``-k u`` from the displacements u off
   the lattice sites, energy ``sum E0 + k |u|² / 2``, k = 2 eV/Å²) — labels only need to be
   read, not learnt;
2. ``equiforce.data.ondisk.preprocess`` (r_max 4 Å, 1 worker, shards of 10,000): wall time and
   the peak resident set of this step (``equiforce.measure.MemoryProbe``, VmHWM reset first);
3. one shuffled epoch of ``make_loader(OnDiskDataset(dir), batch)`` (read + ``collate``):
   structures/s and its own peak resident set;
4. the model's side: median time of a force-training step (``workflows.bench.kinds``'s
   ``train`` call: energy, forces with ``create_graph``, backward) of ``--preset`` on
   batches of the same dataset, as structures/s — the loader must outrun it.

Flat memory means the peak resident set does not grow with N. Output:
``<out>/preprocess_scale_<time>.json`` (run record, settings, per size the figures)::

    python -m benchmarks.preprocess_scale                        # 20k vs 200k
    python -m benchmarks.preprocess_scale --sizes 10000 100000
    python -m benchmarks.preprocess_scale --smoke                 # 200 vs 2000, tiny model
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import add_common_arguments, run_record

CELL_A = 3.6  # Å, cubic fcc Cu-like cell
SITES = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]) * CELL_A
SPRING = 2.0  # eV/Å², harmonic label formula
E0 = {29: -3.5, 79: -3.8}  # eV per atom of the label formula
R_MAX = 4.0


def write_structures(path: Path, n: int, seed: int = 0, chunk: int = 5000) -> None:
    """Write ``n`` labelled 4-atom cells as extxyz, ``chunk`` at a time (bounded memory)."""
    rng = np.random.default_rng(seed)
    lattice = f'Lattice="{CELL_A} 0.0 0.0 0.0 {CELL_A} 0.0 0.0 0.0 {CELL_A}"'
    properties = "Properties=species:S:1:pos:R:3:forces:R:3"
    header = f'4\n{lattice} {properties} energy={{:.10f}} pbc="T T T"\n'
    with open(path, "w") as handle:
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            shifts = rng.uniform(-0.1, 0.1, size=(count, 4, 3))
            gold = rng.random((count, 4)) < 0.25
            lines = []
            for u, au in zip(shifts, gold, strict=True):
                energy = sum(E0[79 if a else 29] for a in au) + 0.5 * SPRING * float((u * u).sum())
                lines.append(header.format(energy))
                for site, d, a in zip(SITES + u, -SPRING * u, au, strict=True):
                    lines.append(
                        f"{'Au' if a else 'Cu'} {site[0]:.8f} {site[1]:.8f} {site[2]:.8f} "
                        f"{d[0]:.8f} {d[1]:.8f} {d[2]:.8f}\n"
                    )
            handle.write("".join(lines))


def run_case(n: int, folder: Path, batch: int, preset: str, steps: int) -> dict[str, Any]:
    """Steps 1-4 for one size, in this process (see the module docstring)."""
    import torch

    from equiforce.data.dataset import make_loader
    from equiforce.data.ondisk import OnDiskDataset, preprocess
    from equiforce.measure import MemoryProbe
    from equiforce.measure.timing import summarize, time_call
    from equiforce.train.config import ModelConfig
    from equiforce.train.setup import build_model_from_config
    from equiforce.workflows.bench.kinds import potential_call

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    xyz, out = folder / "data.xyz", folder / "pre"
    start = time.perf_counter()
    write_structures(xyz, n)
    record: dict[str, Any] = {"n_structures": n, "generate_s": time.perf_counter() - start}
    record["xyz_mb"] = xyz.stat().st_size / 2**20

    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    start = time.perf_counter()
    manifest = preprocess(xyz, out, None, R_MAX, workers=1, shard_size=10_000)
    record["preprocess_s"] = time.perf_counter() - start
    record["preprocess_memory"] = probe.stop()
    record["ondisk_mb"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    record["n_shards"] = len(manifest["shards"])
    xyz.unlink()  # only the preprocessed directory is read from here on

    dataset = OnDiskDataset(out)
    probe.start()
    start = time.perf_counter()
    n_seen = sum(int(b["n_atoms"].shape[0]) for b in make_loader(dataset, batch, True, 0, 0))
    record["epoch_s"] = time.perf_counter() - start
    record["epoch_memory"] = probe.stop()
    record["loader_structures_per_s"] = n_seen / record["epoch_s"]

    statistics = dataset.accumulate().statistics(dataset.type_names)
    model = build_model_from_config(ModelConfig.from_preset(preset), statistics, seed=0)
    batches = iter(make_loader(dataset, batch, True, 0, 1))
    dtype = next(model.parameters()).dtype
    times = []
    for k in range(steps + 1):
        graph_batch = {
            key: value.to(dtype) if value.is_floating_point() else value
            for key, value in next(batches).items()
        }
        ms = time_call(potential_call(model, graph_batch, "train"))
        if k:  # the first step warms up
            times.append(ms)
    record["model_step_ms"] = summarize(times).median_ms
    record["model_structures_per_s"] = batch / (record["model_step_ms"] / 1000.0)
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(p, "bench_out")
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000], help="N per case")
    p.add_argument("--batch", type=int, default=32, help="structures per batch")
    p.add_argument("--preset", default="mace-small", help="model of the step throughput")
    p.add_argument("--steps", type=int, default=5, help="timed model steps (after 1 warm-up)")
    p.add_argument("--smoke", action="store_true", help="200 and 2000 structures, mace-tiny")
    p.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)  # child process
    p.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.preset, args.steps = [200, 2000], "mace-tiny", 2
    return args


def main(argv: list[str] | None = None) -> int:
    """One fresh process per size (peak memory of that size alone); write the JSON."""
    args = parse_args(argv)
    if args.case is not None:  # child: one size, JSON on the last stdout line
        record = run_case(args.case, args.folder, args.batch, args.preset, args.steps)
        print(json.dumps(record, default=str))
        return 0
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out / f"preprocess_scale_{stamp}").resolve()
    cases = []
    for n in args.sizes:
        command = [sys.executable, "-m", "benchmarks.preprocess_scale", "--case", str(n),
                   "--folder", str(out / f"n{n}"), "--batch", str(args.batch),
                   "--preset", args.preset, "--steps", str(args.steps)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            cases.append({"n_structures": n, "error": done.stderr[-4000:]})
            print(f"N={n}: failed\n{done.stderr[-2000:]}", flush=True)
            continue
        case = json.loads(done.stdout.strip().splitlines()[-1])
        cases.append(case)
        print(f"N={n:7d}: preprocess {case['preprocess_s']:7.1f} s "
              f"(peak RSS {case['preprocess_memory']['peak_mb']:6.0f} MB), epoch "
              f"{case['epoch_s']:6.1f} s (peak RSS {case['epoch_memory']['peak_mb']:6.0f} MB), "
              f"loader {case['loader_structures_per_s']:7.0f} structures/s vs model "
              f"{case['model_structures_per_s']:6.1f}", flush=True)  # fmt: skip
    report = {**run_record("benchmarks.preprocess_scale", argv), "settings": vars(args),
              "cases": cases}  # fmt: skip
    path = out / "results.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0 if all("error" not in c for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
