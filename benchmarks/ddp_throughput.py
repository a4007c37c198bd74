"""Data-parallel training throughput on AcAc: 1 rank x 1 thread against 2 ranks x 1 thread.

Each case trains a MACE preset (``equiforce.models.presets``, float32) on the first
``--n-train`` frames of ``acac/train_300K.xyz`` (``benchmarks.acac``'s fixed split, a small
validation set of ``--n-valid`` frames, E0s from the isolated atoms) for ``--epochs`` epochs
with the same run file (global batch ``--batch``) twice, each in fresh processes with
``OMP_NUM_THREADS=1`` per rank:

* ``python -m equiforce train run.yaml`` (1 rank),
* ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m equiforce train
  run.yaml`` (2 ranks, gloo).

The figure is structures per second of whole epochs (training steps, the gradient
all-reduce, validation of the small set, the checkpoint write) from ``metrics.csv``'s
``wall_s``, the median over the epochs after the first (which warms up); with ``--repeats R``
the two world sizes alternate R times and each keeps its best run (the least disturbed by
other processes). The machine's load average before and after each run is recorded: other
processes on the cores take time from both runs, and from the 2-rank run twice;
``process_cpu_s`` (all processes of a run, start-up and data preparation included) shows the
work apart from the waiting. Output:
``<out>/ddp_throughput_<time>.json`` (run record with the reproducing command, settings, per
case both runs and the speed-up)::

    python -m benchmarks.ddp_throughput                          # mace-small, mace-128-l1
    python -m benchmarks.ddp_throughput --presets mace-tiny --smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks import acac
from benchmarks.common import add_common_arguments, run_record
from equiforce.train import ModelConfig
from equiforce.train.metrics import read_metrics_csv

PRESETS = ("mace-small", "mace-128-l1")  # 32 and 128 channels
LAUNCHERS = {
    1: [sys.executable, "-m", "equiforce"],
    2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "equiforce"],
}  # fmt: skip


def run_file(args: argparse.Namespace, split: acac.Split, preset: str, folder: Path) -> Path:
    """The run file of one case (the same for both world sizes but the output folder)."""
    values = {
        "output_dir": str(folder),
        "seed": 0,
        "data": {**acac.data_section(split), "batch_size": args.batch, "valid_batch_size": 8},
        "model": ModelConfig.from_preset(preset, dtype="float32").to_dict(),
        "training": acac.training_section(max_epochs=args.epochs),
    }
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def train_once(path: Path, ranks: int, n_train: int) -> dict[str, Any]:
    """Run ``equiforce train`` on ``ranks`` ranks; epoch times and structures/s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before, used_before = os.getloadavg(), _children_cpu_s()
    done = subprocess.run(
        [*LAUNCHERS[ranks], "train", str(path)], env=env, capture_output=True, text=True
    )
    load_after = os.getloadavg()
    record: dict[str, Any] = {"ranks": ranks, "threads_per_rank": 1,
                              "load_average_1min": [load_before[0], load_after[0]],
                              "process_cpu_s": _children_cpu_s() - used_before}
    if done.returncode != 0:
        return {**record, "error": done.stderr[-4000:]}
    folder = Path(yaml.safe_load(path.read_text())["output_dir"])
    walls = [row["wall_s"] for row in read_metrics_csv(folder / "metrics.csv")]
    epochs = [b - a for a, b in zip([0.0, *walls], walls, strict=False)]
    timed = epochs[1:] or epochs
    return {**record, "epoch_s": epochs,
            "structures_per_s": n_train / statistics.median(timed)}


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes (start-up included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(p, "bench_out")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), help="MACE presets")
    p.add_argument("--n-train", type=int, default=64, help="training frames")
    p.add_argument("--n-valid", type=int, default=4, help="validation frames")
    p.add_argument("--batch", type=int, default=8, help="global batch (structures per step)")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    p.add_argument("--repeats", type=int, default=2, help="alternations of 1 and 2 ranks")
    p.add_argument("--smoke", action="store_true", help="8 training frames, 2 epochs, 1 repeat")
    args = p.parse_args(argv)
    if args.smoke:
        args.n_train, args.n_valid, args.epochs, args.batch, args.repeats = 8, 2, 2, 4, 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Both world sizes per preset; write the JSON and print a table."""
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out / f"ddp_throughput_{stamp}").resolve()
    split = acac.write_split(args.data_dir, out, n_train=args.n_train, n_valid=args.n_valid)
    cases = []
    for preset in args.presets:
        runs = [
            train_once(run_file(args, split, preset, out / f"{preset}_{n}rank_{k}"), n,
                       args.n_train)
            for k in range(args.repeats) for n in (1, 2)
        ]
        speeds = [max((r.get("structures_per_s") or 0.0 for r in runs if r["ranks"] == n),
                      default=0.0) or None for n in (1, 2)]
        speedup = speeds[1] / speeds[0] if None not in speeds else None
        cases.append({"preset": preset, "runs": runs, "structures_per_s": speeds,
                      "speedup": speedup})
        loads = [r["load_average_1min"][0] for r in runs]
        print(f"{preset:12s} 1 rank {speeds[0] or float('nan'):7.2f} structures/s, 2 ranks "
              f"{speeds[1] or float('nan'):7.2f}: x{speedup or float('nan'):.2f} "
              f"(1-min load averages at the starts {loads})", flush=True)
    report = {**run_record("benchmarks.ddp_throughput", argv), "settings": vars(args),
              "cases": cases}
    path = out / "results.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0 if all(r.get("error") is None for c in cases for r in c["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
