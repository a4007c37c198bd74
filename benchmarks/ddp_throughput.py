"""Data-parallel training throughput on AcAc: 1 rank x 1 thread against 2 ranks x 1 thread.

Each case trains a MACE preset (``equiforce.models.presets``, float32) on the first
``--n-train`` frames of ``acac/train_300K.xyz`` (``benchmarks.acac``'s fixed split, a small
validation set of ``--n-valid`` frames, E0s from the isolated atoms) for ``--epochs`` epochs,
each run in fresh processes with ``OMP_NUM_THREADS=1`` per rank:

* ``python -m equiforce train run.yaml`` (1 rank, batch ``--batch``);
* ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m equiforce train
  run.yaml`` (2 ranks, gloo), twice: with the same *global* batch ``--batch`` (each rank
  ``--batch / 2``: the same optimisation as one rank, what ``equiforce`` guarantees to be the
  same run) and with the same *per-rank* batch (global ``2 x --batch``: twice the structures
  per step, the figure data-parallel frameworks usually quote).

The figure is structures per second of whole epochs (training steps, the gradient
all-reduce, validation of the small set, the checkpoint write) from ``metrics.csv``'s
``wall_s``, the median over the epochs after the first (which warms up); with ``--repeats R``
the three runs alternate R times and each keeps its best run (the least disturbed by
other processes). The machine's load average before and after each run is recorded: other
processes on the cores take time from both runs, and from the 2-rank run twice;
``process_cpu_s`` (all processes of a run, start-up and data preparation included) shows the
work apart from the waiting.

``--phases`` adds, in this process on one thread, where one training step's time goes at
per-rank batches 4, 8 and 16 (``step_phases``): collate, forward with the loss, backward,
gradient clipping, the optimizer step (the fused kernel ``train.optim`` uses, and the
per-tensor loop it replaced), the EMA update and the metrics bookkeeping; the per-step costs
that every rank pays whatever its batch, which bound the fixed-global-batch speed-up.

Output: ``<out>/ddp_throughput_<time>/results.json`` (run record with the reproducing
command, settings, per case the runs and both speed-ups)::

    python -m benchmarks.ddp_throughput --batch 16 --repeats 2      # ~5 min on idle cores
    python -m benchmarks.ddp_throughput --presets mace-tiny --smoke --phases
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
import time
from math import nan
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from benchmarks import acac
from benchmarks.common import add_common_arguments, run_record
from equiforce.data.batch import collate
from equiforce.train import ModelConfig, RunConfig
from equiforce.train.ema import ExponentialMovingAverage
from equiforce.train.losses import LossSums
from equiforce.train.metrics import ErrorAccumulator, read_metrics_csv
from equiforce.train.optim import TrainingSchedule, build_optimizer
from equiforce.train.setup import build_model_from_config, prepare_data

PRESETS = ("mace-small", "mace-128-l1")  # 32 and 128 channels
LAUNCHERS = {
    1: [sys.executable, "-m", "equiforce"],
    2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "equiforce"],
}  # fmt: skip
# (name, ranks, global batch as a multiple of --batch): the runs of one case
RUNS = (("1rank", 1, 1), ("2ranks_same_global_batch", 2, 1), ("2ranks_same_rank_batch", 2, 2))
PHASE_BATCHES = (4, 8, 16)


def run_file(
    args: argparse.Namespace, split: acac.Split, preset: str, folder: Path, batch: int | None = None
) -> Path:
    """The run file of one run (global batch ``batch``, default ``--batch``)."""
    values = {
        "output_dir": str(folder),
        "seed": 0,
        "data": {**acac.data_section(split), "batch_size": batch or args.batch,
                 "valid_batch_size": 8},
        "model": ModelConfig.from_preset(preset, dtype="float32").to_dict(),
        "training": acac.training_section(max_epochs=args.epochs),
    }  # fmt: skip
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
    settings = yaml.safe_load(path.read_text())
    record: dict[str, Any] = {"ranks": ranks, "threads_per_rank": 1,
                              "global_batch": settings["data"]["batch_size"],
                              "load_average_1min": [load_before[0], load_after[0]],
                              "process_cpu_s": _children_cpu_s() - used_before}  # fmt: skip
    if done.returncode != 0:
        return {**record, "error": done.stderr[-4000:]}
    folder = Path(settings["output_dir"])
    walls = [row["wall_s"] for row in read_metrics_csv(folder / "metrics.csv")]
    epochs = [b - a for a, b in zip([0.0, *walls], walls, strict=False)]
    timed = epochs[1:] or epochs
    return {**record, "epoch_s": epochs,
            "structures_per_s": n_train / statistics.median(timed)}  # fmt: skip


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes (start-up included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(args: argparse.Namespace, split: acac.Split, preset: str, out: Path) -> dict:
    """The three runs of one preset, alternated ``--repeats`` times; best of each, speed-ups."""
    runs = {name: [] for name, _, _ in RUNS}
    for k in range(args.repeats):
        for name, ranks, factor in RUNS:
            path = run_file(args, split, preset, out / f"{preset}_{name}_{k}", args.batch * factor)
            runs[name].append(train_once(path, ranks, args.n_train))
    best = {name: max((r.get("structures_per_s") or 0.0 for r in rs), default=0.0) or None
            for name, rs in runs.items()}  # fmt: skip

    def ratio(name: str) -> float | None:
        one, two = best["1rank"], best[name]
        return two / one if one and two else None

    return {
        "preset": preset,
        "runs": runs,
        "structures_per_s": best,
        "speedup_same_global_batch": ratio("2ranks_same_global_batch"),
        "speedup_same_rank_batch": ratio("2ranks_same_rank_batch"),
    }


def _median_ms(
    call: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None
) -> float:
    """Median wall time of ``call`` in ms, after an untimed ``setup`` each time (one warm-up
    round first)."""
    (setup or (lambda: None))()
    call()
    times = []
    for _ in range(repeats):
        (setup or (lambda: None))()
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def step_phases(
    args: argparse.Namespace, split: acac.Split, preset: str, batch: int, repeats: int = 5
) -> dict[str, float]:
    """Median ms of each phase of one training step at ``batch`` structures, this process.

    The pieces are those the trainer runs (``collate``, the model with forces, the loss's
    ``term_sums``, backward, ``clip_grad_norm_``, ``build_optimizer``'s fused Adam, the EMA,
    ``LossSums`` + ``ErrorAccumulator``), timed one by one on the same batches;
    ``optimizer_loop`` is the per-tensor Adam the fused one replaced.
    """
    config = RunConfig.from_dict(yaml.safe_load(
        run_file(args, split, preset, args.out / "phases", batch).read_text()))  # fmt: skip
    data = prepare_data(config)
    model = build_model_from_config(config.model, data.statistics, config.seed).train()
    settings = config.training
    optimizer = build_optimizer(model, settings)
    loop = torch.optim.Adam(model.parameters(), lr=settings.lr, amsgrad=settings.amsgrad,
                            weight_decay=settings.weight_decay, foreach=False)  # fmt: skip
    ema = ExponentialMovingAverage(model, settings.ema.decay)
    loss_fn = TrainingSchedule(settings, optimizer).loss(0)
    graphs = [data.train[i % len(data.train)] for i in range(batch)]
    batch_dict = collate(graphs)
    state: dict[str, Any] = {}

    def forward() -> None:
        model.zero_grad(set_to_none=True)
        state["pred"] = model(batch_dict, compute_forces=True, compute_stress=False)
        state["sums"] = loss_fn.term_sums(batch_dict, state["pred"])
        state["loss"] = loss_fn.from_sums(*state["sums"])

    def backward() -> None:
        state["loss"].backward()

    def metrics() -> None:
        pred = {k: v.detach() for k, v in state["pred"].items()}
        LossSums(loss_fn).add(*state["sums"])
        ErrorAccumulator().add(batch_dict, pred)

    params = list(model.parameters())
    phases = {
        "collate": _median_ms(lambda: collate(graphs), repeats),
        "forward_and_loss": _median_ms(forward, repeats),
        "backward": _median_ms(backward, repeats, setup=forward),
        "clip_grad_norm": _median_ms(lambda: torch.nn.utils.clip_grad_norm_(params, 1e9), 20),
        "optimizer_fused": _median_ms(optimizer.step, 20),
        "optimizer_loop": _median_ms(loop.step, 20),
        "ema_update": _median_ms(lambda: ema.update(model), 20),
        "metrics": _median_ms(metrics, 20),
    }
    return phases


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(p, "bench_out")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), help="MACE presets")
    p.add_argument("--n-train", type=int, default=128, help="training frames")
    p.add_argument("--n-valid", type=int, default=4, help="validation frames")
    p.add_argument("--batch", type=int, default=16,
                   help="global batch of the 1-rank run (structures per step)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    p.add_argument("--repeats", type=int, default=2, help="alternations of the three runs")
    p.add_argument("--phases", action="store_true",
                   help="also time one step's phases at batches 4, 8, 16 (in-process)")  # fmt: skip
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
    args.out = out
    split = acac.write_split(args.data_dir, out, n_train=args.n_train, n_valid=args.n_valid)
    cases = []
    for preset in args.presets:
        case = run_case(args, split, preset, out)
        if args.phases:
            torch.set_num_threads(1)
            case["step_phases_ms"] = {b: step_phases(args, split, preset, b)
                                      for b in PHASE_BATCHES}  # fmt: skip
        cases.append(case)
        speeds = case["structures_per_s"]
        loads = [r["load_average_1min"][0] for rs in case["runs"].values() for r in rs]
        print(f"{preset:12s} structures/s: 1 rank x {args.batch}: {speeds['1rank'] or nan:.2f}; "
              f"2 ranks x {args.batch // 2} (same global batch): "
              f"{speeds['2ranks_same_global_batch'] or nan:.2f} "
              f"(x{case['speedup_same_global_batch'] or nan:.2f}); 2 ranks x {args.batch} "
              f"(same per-rank batch): {speeds['2ranks_same_rank_batch'] or nan:.2f} "
              f"(x{case['speedup_same_rank_batch'] or nan:.2f}); 1-min loads at the starts "
              f"{loads}", flush=True)  # fmt: skip
        for batch, phases in case.get("step_phases_ms", {}).items():
            print(f"  step at batch {batch:2d} (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()), flush=True)
    report = {**run_record("benchmarks.ddp_throughput", argv), "settings": vars(args),
              "cases": cases}  # fmt: skip
    path = out / "results.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    ok = all(r.get("error") is None for c in cases for rs in c["runs"].values() for r in rs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
