r"""A distillation on one rank and on two: wall time of the teacher's work and of the student.

The same distillation three ways, each from empty caches, in its own process(es), the runs
alternating over ``--repeats``:

* ``1 rank x 1 thread`` and ``1 rank x T threads`` (T = ``--threads``, the cores of the two
  ranks together): ``equiforce distill``;
* ``2 ranks x 1 thread``: ``torchrun --standalone --nproc_per_node 2 -m equiforce distill``.

Data: the first ``--train`` AcAc ``train_300K`` structures (the next 5 validate, the 10 after
test). Teacher: the preset ``--teacher`` (random weights, float32, H/C/O) saved as a model
file; it labels the structures, rattled copies (2 scales), teacher MD (2 starts x 2
temperatures x ``--snapshots``) and Hessian-vector products of ``--hessian`` structures.
Student: ``mace-small`` with feature and Hessian matching, ``--epochs`` epochs, global batch 8.

Per run the log's timestamps split the wall time: ``teacher work`` (start to the student data
written: MD, labels, features, HVPs), ``student`` (its training), and the whole command
(process start and rank 0's report included). JSON in ``--out``::

    python -m benchmarks.distill_ranks --repeats 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import add_common_arguments, preset_with_species, require_data, run_record
from equiforce.train.config import ModelConfig
from equiforce.workflows.bench.report import write_json

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")
RUNS = ("1 rank x 1 thread", "1 rank x T threads", "2 ranks x 1 thread")


def _config(out: Path, files: dict[str, Path], teacher: Path, args) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "seed": 0,
        "teacher": {"model": str(teacher)},
        "data": {
            "train_file": str(files["train"]),
            "valid_file": str(files["valid"]),
            "test_file": str(files["test"]),
            "batch_size": 8,
        },
        "augment": {
            "rattle": {"scales": [0.02, 0.05], "copies": 1},
            "md": {
                "temperatures": [300.0, 600.0],
                "n_starts": 2,
                "n_snapshots": args.snapshots,
                "interval": 5,
            },
        },
        "losses": {
            "feature_weight": 0.5,
            "hessian_weight": 0.01,
            "hessian_structures": args.hessian,
        },
        "labels": {"save_every": 16},
        "student": ModelConfig.from_preset("mace-small", dtype="float32").to_dict(),
        "training": {"max_epochs": args.epochs, "progress_bar": False},
        "report": {"timing_calls": 1, "warmup_calls": 0},
    }


def _phases(log: str, wall_s: float) -> dict[str, float]:
    """Seconds of the teacher's work and of the student's training, from the log's stamps."""
    stamps = []
    for line in log.splitlines():
        match = _STAMP.match(line)
        if match:
            moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            stamps.append((moment.timestamp(), match.group(2)))
    first = stamps[0][0]
    data = next(t for t, text in stamps if text.startswith("student data:"))
    trained = max(t for t, text in stamps if "epoch" in text)
    return {"wall_s": wall_s, "teacher_work_s": data - first, "student_s": trained - data}


def _run(name: str, folder: Path, files, teacher: Path, args) -> dict[str, float]:
    config = folder / "distill.yaml"
    folder.mkdir(parents=True)
    config.write_text(yaml.safe_dump(_config(folder / "out", files, teacher, args)))
    threads = args.threads if name == "1 rank x T threads" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ranks = launcher if name.startswith("2 ranks") else []
    command = [sys.executable, *ranks, "-m", "equiforce", "distill", str(config)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return _phases(done.stderr, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "bench_out/distill_ranks")
    parser.add_argument("--train", type=int, default=40, help="AcAc training structures")
    parser.add_argument("--snapshots", type=int, default=20, help="per teacher MD trajectory")
    parser.add_argument("--hessian", type=int, default=16, help="structures with HVP targets")
    parser.add_argument("--epochs", type=int, default=3, help="student epochs")
    parser.add_argument("--teacher", default="mace-128-l1", help="teacher preset")
    parser.add_argument("--threads", type=int, default=2, help="T of 1 rank x T threads")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    from ase.io import read, write

    from equiforce.models import save_model

    (source,) = require_data(args.data_dir, "acac/train_300K.xyz")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / stamp
    out.mkdir(parents=True)
    frames = read(source, f":{args.train + 15}")
    files = {"train": out / "train.xyz", "valid": out / "valid.xyz", "test": out / "test.xyz"}
    write(files["train"], frames[: args.train], format="extxyz")
    write(files["valid"], frames[args.train : args.train + 5], format="extxyz")
    write(files["test"], frames[args.train + 5 :], format="extxyz")
    teacher = save_model(
        preset_with_species(args.teacher, ("H", "C", "O"), "float32", 0), out / "teacher.pt"
    )
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in RUNS}
    for repeat in range(args.repeats):
        for k, name in enumerate(RUNS):
            figures = _run(name, out / f"run{repeat}_{k}", files, teacher, args)
            runs[name].append(figures)
            print(f"{name}: " + ", ".join(f"{key} {value:.1f}" for key, value in figures.items()))
    medians = {
        name: {key: float(np.median([r[key] for r in rows])) for key in rows[0]}
        for name, rows in runs.items()
    }
    base = dict(medians["1 rank x 1 thread"])
    for figures in medians.values():
        figures.update({f"speedup_{k}": base[k] / figures[k] for k in base})
    document = {**run_record("benchmarks.distill_ranks", argv), "runs": runs, "medians": medians}
    path = out / "distill_ranks.json"
    write_json(document, path)
    for name, figures in medians.items():
        print(
            f"{name:>20}: teacher work {figures['teacher_work_s']:.1f} s "
            f"(x{figures['speedup_teacher_work_s']:.2f}), student {figures['student_s']:.1f} s "
            f"(x{figures['speedup_student_s']:.2f}), whole {figures['wall_s']:.1f} s "
            f"(x{figures['speedup_wall_s']:.2f})"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
