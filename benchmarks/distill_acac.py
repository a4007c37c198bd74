"""Distillation benchmark on AcAc: teacher -> small MACE students, against DFT-only students.

Data: the split of ``benchmarks.acac`` (``--train-frames N``: the first N of the 450 training
frames only, for a student with scarce DFT data); errors against DFT on ``test_MD_300K`` and
``test_MD_600K`` (``equiforce.train.evaluate``; the teacher's through ``errors_of``).

Every student of ``--students`` (``channels:max_L``) is the preset ``mace-small`` with that
width and max_L, float32, trained for ``--budget-s`` seconds of training loop with
``benchmarks.acac``'s recipe (plateau patience 5; ``--stage-two-fraction``: mace-torch's final
stage, lr 1e-3 and energy weight 1000, after that fraction of the budget):

* distilled: ``equiforce.workflows.distill.distill`` (a sweep over the students): the teacher
  labels the training structures, rattled copies (``--rattle`` Å), teacher-driven Langevin MD
  at 300 K and 600 K (4 starts x 25 snapshots) and normal-mode samples (2 starts x 25, 300 K);
  the student trains on those (weight 1) and the DFT frames (weight 1), optionally with
  feature (``--feature-weight``) and Hessian matching (``--hessian-weight``);
* baseline (``--baselines``, default all): the same student on the DFT frames alone
  (``equiforce.train.train``), reused by a later run when its configuration is unchanged.

Teacher: ``--teacher-model`` (an equiforce model file) or ``--teacher-calculator module:Class``
with ``--teacher-kwargs`` JSON (e.g. mace-torch's ``MACECalculator``, run from ``.venv-mace``).
``--jobs N`` trains N students at a time (fresh processes, ``--threads`` each) after the teacher
has labelled everything once.

Phases: ``train`` (default; long, run it niced) writes ``results.json``; ``baselines`` trains
only the DFT-only students; ``time`` re-times every model (``equiforce.workflows.distill.timing``:
fresh process, one thread, median of ``--calls`` calls after 5 warm-ups) on one AcAc molecule
and on 64 molecules 12 Å apart (960 atoms), and draws ``pareto.png``; ``--compile`` times the
equiforce models compiled, on the one molecule (``timings_compiled``)::

    nice -n 15 python -m benchmarks.distill_acac --teacher-model T.pt --out DIR
    flock /tmp/equiforce_bench.lock python -m benchmarks.distill_acac --phase time --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.io import read, write

from benchmarks import acac
from benchmarks.common import add_common_arguments, machine_info, run_record
from equiforce.data.extxyz import read_configurations
from equiforce.models import load_model
from equiforce.train import ModelConfig, RunConfig, train
from equiforce.train.evaluate import Predictions, errors_of, to_json
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.data import configuration_to_atoms
from equiforce.workflows.distill.report import plot_pareto
from equiforce.workflows.distill.run import distill, label_everything, student_name
from equiforce.workflows.distill.teacher import load_teacher
from equiforce.workflows.distill.timing import measure_in_subprocess

STUDENT_PRESET = "mace-small"


def student_model(channels: int, max_l: int) -> dict[str, Any]:
    """The model section of a student."""
    preset = ModelConfig.from_preset(
        STUDENT_PRESET, num_channels=channels, max_L=max_l, dtype="float32"
    )
    return preset.to_dict()


def training_section(args: argparse.Namespace) -> dict[str, Any]:
    """Every student's optimisation (distilled and baseline alike)."""
    stage_two = {"enabled": False}
    if args.stage_two_fraction is not None:
        stage_two = {"enabled": True, "start_time_fraction": args.stage_two_fraction,
                     "lr": 1e-3, "energy_weight": 1000.0, "forces_weight": 100.0,
                     "stress_weight": 0.0}
    return acac.training_section(
        args.budget_s, scheduler={"factor": 0.8, "patience": 5}, stage_two=stage_two
    )


def distill_config(args: argparse.Namespace, split: acac.Split, out: Path) -> dict[str, Any]:
    """The distillation (a sweep over ``--students``)."""
    if args.teacher_model is not None:
        teacher = {"model": args.teacher_model, "batch_size": 16}
    else:
        teacher = {"calculator": args.teacher_calculator, "kwargs": json.loads(args.teacher_kwargs)}
    starts, samples = (1, 2) if args.smoke else (4, 25)
    return {
        "output_dir": str(out / "distill"),
        "seed": 0,
        "teacher": teacher,
        "data": {**acac.data_section(split), "test_file": str(split.tests["test_MD_300K"])},
        "augment": {
            "rattle": {"scales": args.rattle, "copies": 1},
            "md": {"temperatures": [300.0, 600.0], "n_starts": starts, "n_snapshots": samples,
                   "interval": 10, "timestep_fs": 0.5},
            "normal_modes": {"n_starts": min(starts, 2), "n_samples": samples,
                             "temperature": 300.0},
        },
        "labels": {"cache_dir": str(args.label_cache or out / "labels"), "save_every": 50},
        "losses": {"teacher_weight": 1.0, "ground_truth_weight": 1.0,
                   "feature_weight": args.feature_weight, "hessian_weight": args.hessian_weight,
                   "hessian_structures": args.hessian_structures},
        "student": student_model(*args.students[0]),
        "training": training_section(args),
        "report": {"timing_calls": 5, "warmup_calls": 2},
        "sweep": {"students": [{"num_channels": c, "max_L": L} for c, L in args.students]},
    }


def baseline_run(args, split: acac.Split, out: Path, channels: int, max_l: int) -> dict:
    """The DFT-only student's run configuration (as a dict)."""
    name = student_name({"num_channels": channels, "max_L": max_l})
    return {
        "output_dir": str(out / "baseline" / name),
        "seed": 0,
        "data": acac.data_section(split),
        "model": student_model(channels, max_l),
        "training": training_section(args),
    }


def finished_baseline(values: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a finished baseline run with exactly this configuration, if any."""
    record = Path(values["output_dir"]) / "baseline.json"
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    return saved if saved["run_config"] == json.loads(json.dumps(values)) else None


def train_baseline(values: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) a DFT-only student; its model file and epochs."""
    saved = finished_baseline(values)
    if saved is not None:
        return {k: saved[k] for k in ("model_path", "epochs")}
    result = train(RunConfig.from_dict(values))
    record = {"model_path": str(result.model_path), "epochs": result.epochs_completed}
    path = Path(values["output_dir"]) / "baseline.json"
    path.write_text(json.dumps(record | {"run_config": values}, indent=1))
    return record


def distill_one(values: dict[str, Any]) -> None:
    """Distil the single sweep student of ``values`` (one job of ``--jobs``)."""
    distill(DistillConfig.from_dict(values), sweep=True, progress=False)


def teacher_errors(teacher, tests: dict[str, Path]) -> dict[str, Any]:
    """The teacher's errors on each test set (any kind of teacher)."""
    out = {}
    for name, path in tests.items():
        configs = read_configurations(path)
        labels = teacher.label([configuration_to_atoms(c) for c in configs])
        predictions = Predictions(
            energy=np.array([x.energy for x in labels]),
            forces=np.concatenate([x.forces for x in labels]),
            n_atoms=np.array([c.n_atoms for c in configs]),
            stress=None,
        )
        out[name] = json.loads(to_json(errors_of(configs, predictions)))["metrics"]
    return out


def phase_baselines(args: argparse.Namespace, out: Path, split: acac.Split) -> dict[str, Any]:
    """Train only the DFT-only students (``--jobs`` at a time)."""
    runs = [baseline_run(args, split, out, c, L) for c, L in args.baselines]
    with acac.process_pool(args.threads, args.jobs) as pool:
        records = list(pool.map(train_baseline, runs))
    return {"baselines": records}


def phase_train(args: argparse.Namespace, out: Path, split: acac.Split) -> dict[str, Any]:
    """Distil, train the baselines, evaluate everything."""
    values = distill_config(args, split, out)
    config = DistillConfig.from_dict(values)
    baselines = {(c, L): baseline_run(args, split, out, c, L) for c, L in args.baselines}
    results: dict[str, Any] = {"distill_config": values}
    if args.jobs > 1:
        torch.set_num_threads(args.threads * args.jobs)
        label_everything(config, progress=False)
        one_each = [values | {"sweep": {"students": [s]}} for s in values["sweep"]["students"]]
        with acac.process_pool(args.threads, args.jobs) as pool:
            list(pool.map(distill_one, one_each))
            list(pool.map(train_baseline, baselines.values()))
    torch.set_num_threads(args.threads)
    distilled = distill(config, sweep=True, resume=args.jobs > 1, progress=False)
    results["counts"] = distilled.counts
    teacher = load_teacher(config.teacher, read(split.tests["test_MD_300K"], index=0))
    results["teacher"] = {
        "description": teacher.description,
        "n_parameters": teacher.n_parameters(),
        "errors": teacher_errors(teacher, split.tests),
    }
    students = []
    for row, size in zip(distilled.rows[1:], args.students, strict=True):
        model_path = out / "distill" / "students" / row["name"] / "model.pt"
        entry = {"channels": size[0], "max_L": size[1], "distilled": {
            "model_path": str(model_path),
            "epochs": row["epochs"],
            "n_parameters": row["n_parameters"],
            "errors": acac.test_errors(load_model(model_path), split.tests),
        }}
        if size in baselines:
            entry["baseline"] = train_baseline(baselines[size])
            model = load_model(entry["baseline"]["model_path"])
            entry["baseline"]["errors"] = acac.test_errors(model, split.tests)
        students.append(entry)
    results["students"] = students
    return results


def phase_time(args: argparse.Namespace, out: Path, split: acac.Split) -> dict[str, Any]:
    """Re-time every model of ``results.json`` (under the benchmark lock); the Pareto plot."""
    results = json.loads((out / "results.json").read_text())
    systems = {"1_acac": str(split.tests["test_MD_300K"])}
    if not args.compile:  # compiled MACE is slower than eager on 960 atoms (docs/performance.md)
        molecule = read(split.tests["test_MD_300K"], index=0)
        write(out / "acac64.xyz", acac.molecule_grid([molecule] * 64, 4, 12.0))
        systems["64_acac"] = str(out / "acac64.xyz")
    key = "timings_compiled" if args.compile else "timings"
    teacher = results["distill_config"]["teacher"]
    spec = {k: v for k, v in teacher.items() if k in ("model", "calculator", "kwargs")}
    entries = [(results["teacher"], spec)]
    for student in results["students"]:
        entries += [(student[kind], {"model": student[kind]["model_path"]})
                    for kind in ("distilled", "baseline") if kind in student]
    for system, structure in systems.items():
        for target, model in entries:
            spec = {**model, "structure_file": structure, "calls": args.calls, "warmup": 5,
                    "threads": 1}
            if args.compile and "model" in model:
                spec["compile"] = True
            target.setdefault(key, {})[system] = measure_in_subprocess(spec)
    results[f"{key}_machine"] = machine_info(["torch"])
    if not args.compile:
        rows = [_pareto_row("teacher", "teacher", results["teacher"])]
        for student in results["students"]:
            size = f"{student['channels']}ch L={student['max_L']}"
            rows.append(_pareto_row(f"distilled {size}", "student", student["distilled"]))
            if "baseline" in student:
                rows.append(_pareto_row(f"DFT-only {size}", "baseline", student["baseline"]))
        plot_pareto(rows, out / "pareto.png")
    return results


def _pareto_row(name: str, role: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "role": role,
            "ms_per_atom_step": entry["timings"]["64_acac"]["ms_per_atom_step"],
            "test_forces_rmse": entry["errors"]["test_MD_300K"]["forces"]["rmse"]}


def print_table(results: dict[str, Any]) -> None:
    """Test RMSE (energy meV, forces meV/Å) and ms per call of every model."""
    print("| model | 300K E | 300K F | 600K E | 600K F | ms/call 1 AcAc | ms/call 64 AcAc |")
    print("|---|---|---|---|---|---|---|")

    def line(name: str, entry: dict[str, Any]) -> None:
        e = entry["errors"]
        cells = [f"{e[t][q]['rmse']:.1f}" for t in acac.TEST_SETS for q in ("energy", "forces")]
        for system in ("1_acac", "64_acac"):
            ms = entry.get("timings", {}).get(system, {}).get("ms_per_call")
            cells.append("-" if ms is None else f"{ms:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")

    line("teacher", results["teacher"])
    for student in results["students"]:
        size = f"{student['channels']}ch L={student['max_L']}"
        line(f"distilled {size}", student["distilled"])
        if "baseline" in student:
            line(f"DFT-only {size}", student["baseline"])


def student_size(text: str) -> tuple[int, int]:
    """``"16:1"`` -> (16 channels, max_L 1)."""
    channels, _, max_l = text.partition(":")
    try:
        return int(channels), int(max_l or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channels:max_L, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(p, "bench_out/distill_acac")
    p.add_argument("--phase", choices=("train", "baselines", "time"), default="train")
    teacher = p.add_mutually_exclusive_group()
    teacher.add_argument("--teacher-model", help="equiforce model file")
    teacher.add_argument("--teacher-calculator", help="ASE calculator as module:Class")
    p.add_argument("--teacher-kwargs", default="{}", help="JSON calculator kwargs")
    p.add_argument("--students", type=student_size, nargs="+", default=[(8, 0), (16, 0)],
                   help="student sizes as channels:max_L")
    p.add_argument("--baselines", type=student_size, nargs="*",
                   help="students that get a DFT-only baseline (default: all; none: no value)")
    p.add_argument("--rattle", type=float, nargs="*", default=[0.01, 0.02], help="scales, Å")
    p.add_argument("--budget-s", type=float, default=300.0, help="training loop per student")
    p.add_argument("--stage-two-fraction", type=float,
                   help="final stage (lr 1e-3, energy weight 1000) after this budget fraction")
    p.add_argument("--feature-weight", type=float, default=0.0, help="losses.feature_weight")
    p.add_argument("--hessian-weight", type=float, default=0.0, help="losses.hessian_weight")
    p.add_argument("--hessian-structures", type=int, help="losses.hessian_structures")
    p.add_argument("--label-cache", help="shared teacher-label cache folder")
    p.add_argument("--train-frames", type=int, default=450, help="DFT training frames")
    p.add_argument("--smoke", action="store_true",
                   help="tiny split (20 / 5 frames, 10 test frames) and augmentation")
    p.add_argument("--jobs", type=int, default=1, help="student trainings at a time")
    p.add_argument("--threads", type=int, default=1, help="threads per training process")
    p.add_argument("--calls", type=int, default=30, help="time phase: timed calls per model")
    p.add_argument("--compile", action="store_true",
                   help="time phase: equiforce models compiled, one molecule only")
    args = p.parse_args(argv)
    if args.baselines is None:
        args.baselines = list(args.students)
    if args.phase == "train" and args.teacher_model is None and args.teacher_calculator is None:
        p.error("--teacher-model or --teacher-calculator is required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the requested phase, write ``results.json`` (not for ``baselines``), print."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = acac.SMOKE if args.smoke else {"n_train": args.train_frames}
    split = acac.write_split(args.data_dir, args.out, **sizes)
    if args.phase == "baselines":
        print(json.dumps(phase_baselines(args, args.out, split), indent=1))
        return 0
    if args.phase == "train":
        record = run_record("benchmarks.distill_acac", argv)
        results = {**record, "settings": vars(args), **phase_train(args, args.out, split)}
    else:
        results = phase_time(args, args.out, split)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
