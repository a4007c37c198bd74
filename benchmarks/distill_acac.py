"""Distillation benchmark on AcAc: teacher -> small MACE students, against DFT-only students.

Data (``benchmarks/acac_train.py``'s fixed split): the first 450 frames of
``acac/train_300K.xyz`` train (``--train-frames N``: only the first N, for a student with
scarce DFT data and a teacher trained on more), the last 50 validate; E0s from
``acac/isolated_atoms.xyz``; errors on ``test_MD_300K`` and ``test_MD_600K`` (ground truth: DFT).

For every student in ``--students`` (``channels:max_L`` pairs; MACE, 2 interactions, float32):

* distilled: ``equiforce.workflows.distill.distill`` with ``--sweep`` over the students: the teacher labels
  the 450 training structures, rattled copies (``--rattle``, default 0.01 and 0.02 Å: larger
  independent displacements of a molecule's stiff bonds cost eV), teacher-driven Langevin MD at
  300 K and 600 K (4 starts x 25 snapshots each) and normal-mode samples (2 starts x 25 at 300 K)
  plus the 50 validation structures; the student trains on teacher frames (weight 1) and the DFT
  frames (weight 1) for ``--budget-s`` seconds of training loop, optionally with feature
  (``--feature-weight``, equiforce teachers) and Hessian matching (``--hessian-weight``);
* baseline: the same student trained on the 450 DFT frames alone (``equiforce.train.train``)
  for the same ``--budget-s``.

Teacher (``--teacher-model`` an equiforce model file, or ``--teacher-calculator module:Class``
with ``--teacher-kwargs`` JSON, e.g. mace-torch's ``MACECalculator`` run from ``.venv-mace``).

``--jobs N`` trains N students (distilled or baseline) at a time, each in its own process with
``--threads`` threads, after the teacher has labelled everything once; the sweep's report is then
assembled from the finished students. ``--phase baselines`` trains only the DFT-only students
(no teacher needed, e.g. while the teacher trains); a later ``train`` phase in the same ``--out``
reuses a finished baseline whose run configuration is unchanged.

Phases: ``train`` (default; long, run it niced, without the benchmark lock) writes
``results.json``; ``time`` re-times every model (``equiforce.workflows.distill.timing``: fresh process,
one thread, median of ``--calls`` energy+forces calls after 5 warm-up calls; peak memory = growth
of the peak RSS over loading and calling) on one AcAc molecule and on 64 molecules 12 Å apart in
one structure (960 atoms, where the model's cost rather than per-call overhead dominates), and
draws ``pareto.png`` (test_MD_300K force RMSE vs ms per atom-step of the 64-molecule system);
run it under ``flock /tmp/equiforce_bench.lock``. ``--phase time --compile`` times the
equiforce models compiled (``EquiforceCalculator(compile=True)``: Inductor, compiled during the
warm-up calls) on the one molecule, stored as ``timings_compiled``::

    nice -n 15 .venv/bin/python benchmarks/distill_acac.py --teacher-model T.pt --out DIR
    flock /tmp/equiforce_bench.lock .venv/bin/python benchmarks/distill_acac.py \
        --phase time --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acac_train  # noqa: E402
import bench_common  # noqa: E402

TEST_SETS = acac_train.TEST_SETS


def student_model(channels: int, max_l: int) -> dict[str, Any]:
    """The student's model section."""
    return {
        "family": "mace",
        "r_max": 5.0,
        "num_channels": channels,
        "max_L": max_l,
        "max_ell": 3,
        "correlation": 3,
        "num_interactions": 2,
        "num_radial_basis": 8,
        "radial_mlp": [64, 64, 64],
        "dtype": "float32",
        # residual first interaction (the default of equiforce and mace-torch), as the teacher
        "first_interaction_residual": True,
    }


def sweep_entry(channels: int, max_l: int) -> dict[str, int]:
    """The sweep override of one student; its name (``student_name``) names its folders."""
    return {"num_channels": channels, "max_L": max_l}


def training_section(budget_s: float, stage_two_fraction: float | None) -> dict[str, Any]:
    """Optimisation of every student (acac_train.py's settings, a wall-clock budget).

    ``stage_two_fraction``: start mace-torch's final stage (lr 1e-3, energy weight 1000) after
    this fraction of the budget; ``None``: the plateau schedule throughout.
    """
    training = {
        "max_epochs": 100000,
        "lr": 0.01,
        "energy_weight": 1.0,
        "forces_weight": 100.0,
        "stress_weight": 0.0,
        "scheduler": {"factor": 0.8, "patience": 5},
        "time_budget_s": budget_s,
        "device": "cpu",
        "progress_bar": False,
    }
    if stage_two_fraction is not None:
        training["stage_two"] = {
            "enabled": True,
            "start_time_fraction": stage_two_fraction,
            "lr": 1e-3,
            "energy_weight": 1000.0,
            "forces_weight": 100.0,
            "stress_weight": 0.0,
        }
    return training


def data_section(paths: dict[str, Path]) -> dict[str, Any]:
    """The data section over the fixed split."""
    return {
        "train_file": str(paths["train"]),
        "valid_file": str(paths["valid"]),
        "isolated_atoms_file": str(paths["isolated"]),
        "batch_size": 5,
        "valid_batch_size": 10,
    }


def distill_config(args: argparse.Namespace, paths: dict[str, Path], out: Path) -> dict:
    """The distillation (sweep over ``--students``)."""
    if args.teacher_model is not None:
        teacher = {"model": args.teacher_model, "batch_size": 16}
    else:
        teacher = {"calculator": args.teacher_calculator, "kwargs": json.loads(args.teacher_kwargs)}
    base = student_model(*args.students[0])
    return {
        "output_dir": str(out / "distill"),
        "seed": 0,
        "teacher": teacher,
        "data": {**data_section(paths), "test_file": str(paths["test_MD_300K"])},
        "augment": {
            "rattle": {"scales": args.rattle, "copies": 1},
            "md": {
                "temperatures": [300.0, 600.0],
                "n_starts": 1 if args.smoke else 4,
                "n_snapshots": 2 if args.smoke else 25,
                "interval": 10,
                "timestep_fs": 0.5,
            },
            "normal_modes": {
                "n_starts": 1 if args.smoke else 2,
                "n_samples": 2 if args.smoke else 25,
                "temperature": 300.0,
            },
        },
        "labels": {"cache_dir": str(args.label_cache or out / "labels"), "save_every": 50},
        "losses": {
            "teacher_weight": 1.0,
            "ground_truth_weight": 1.0,
            "feature_weight": args.feature_weight,
            "hessian_weight": args.hessian_weight,
            "hessian_structures": args.hessian_structures,
        },
        "student": base,
        "training": training_section(args.budget_s, args.stage_two_fraction),
        "report": {"timing_calls": 5, "warmup_calls": 2},
        "sweep": {"students": [sweep_entry(c, L) for c, L in args.students]},
    }


def evaluate_model(model_path: Path, tests: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Errors of an equiforce model file on each test set."""
    from equiforce.models.io import load_model
    from equiforce.train.evaluate import predict

    model = load_model(model_path)
    out = {}
    for name, (configs, reference) in tests.items():
        pred = predict(model, configs, batch_size=32)
        values = {"energy": pred.energy, "forces": pred.forces}
        out[name] = acac_train.error_metrics(reference, values)
    return out


def evaluate_teacher(teacher, tests: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Errors of the teacher (any kind) on each test set."""
    import numpy as np

    from equiforce.workflows.distill.data import configuration_to_atoms

    out = {}
    for name, (configs, reference) in tests.items():
        labels = teacher.label([configuration_to_atoms(c) for c in configs])
        values = {
            "energy": np.array([x.energy for x in labels]),
            "forces": np.concatenate([x.forces for x in labels]),
        }
        out[name] = acac_train.error_metrics(reference, values)
    return out


def prepare_split(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """``acac_train``'s fixed split, training set cut to its first ``--train-frames`` frames."""
    paths = acac_train.prepare_data(Path(args.data_dir), out, smoke=args.smoke)
    frames = acac_train.xyz_frames(paths["train"])
    if args.train_frames is not None and args.train_frames < len(frames):
        paths["train"].write_text("".join(frames[: args.train_frames]))
    return paths


def baseline_run_config(args, paths, out: Path, channels: int, max_l: int) -> dict[str, Any]:
    """The DFT-only student's run configuration (as a dict)."""
    from equiforce.workflows.distill.run import student_name

    name = student_name(sweep_entry(channels, max_l))
    return {
        "output_dir": str(out / "baseline" / name),
        "seed": 0,
        "data": data_section(paths),
        "model": student_model(channels, max_l),
        "training": training_section(args.budget_s, args.stage_two_fraction),
    }


def finished_baseline(values: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a finished baseline run with exactly this configuration, if any."""
    record = Path(values["output_dir"]) / "baseline.json"
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    return saved if saved["run_config"] == json.loads(json.dumps(values)) else None


def train_baseline(values: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train (or reuse) the student on the DFT data alone for the same budget."""
    import torch

    from equiforce.train.config import RunConfig
    from equiforce.train.run import train

    saved = finished_baseline(values)
    if saved is not None:
        logging.info("reusing the finished baseline %s", values["output_dir"])
        return {k: saved[k] for k in ("model_path", "epochs")}
    torch.set_num_threads(threads)
    result = train(RunConfig.from_dict(values))
    record = {"model_path": str(result.model_path), "epochs": result.epochs_completed}
    path = Path(values["output_dir"]) / "baseline.json"
    path.write_text(json.dumps(record | {"run_config": values}, indent=1))
    return record


def distill_one(values: dict[str, Any], threads: int) -> None:
    """Distil the single sweep student of ``values`` (a worker process of ``--jobs``)."""
    import torch

    from equiforce.workflows.distill.config import DistillConfig
    from equiforce.workflows.distill.run import distill

    torch.set_num_threads(threads)
    distill(DistillConfig.from_dict(values), sweep=True, progress=False)


def _run_job(job: tuple[str, dict[str, Any], int]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kind, values, threads = job
    (train_baseline if kind == "baseline" else distill_one)(values, threads)


def run_jobs(jobs: list[tuple[str, dict[str, Any], int]], n_workers: int) -> None:
    """Run student trainings ``n_workers`` at a time, each in a fresh (spawned) process."""
    if not jobs:
        return
    with multiprocessing.get_context("spawn").Pool(n_workers, maxtasksperchild=1) as pool:
        pool.map(_run_job, jobs, chunksize=1)


def phase_baselines(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train only the DFT-only students (``--jobs`` at a time); returns their records."""
    paths = prepare_split(args, out)
    runs = [baseline_run_config(args, paths, out, c, L) for c, L in args.baselines]
    run_jobs([("baseline", v, args.threads) for v in runs if not finished_baseline(v)], args.jobs)
    records = [finished_baseline(v) or {} for v in runs]
    return {"baselines": [{k: r.get(k) for k in ("model_path", "epochs")} for r in records]}


def phase_train(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Distil, train the baselines, evaluate everything; returns the results."""
    import torch

    from equiforce.data.extxyz import read_configurations
    from equiforce.workflows.distill.config import DistillConfig
    from equiforce.workflows.distill.data import configuration_to_atoms
    from equiforce.workflows.distill.run import distill, label_everything
    from equiforce.workflows.distill.teacher import load_teacher

    torch.set_num_threads(args.threads)
    paths = prepare_split(args, out)
    tests = {
        name: (read_configurations(paths[name]), acac_train.reference_labels(paths[name]))
        for name in TEST_SETS
    }
    values = distill_config(args, paths, out)
    config = DistillConfig.from_dict(values)
    baselines = [
        baseline_run_config(args, paths, out, c, L) if (c, L) in args.baselines else None
        for c, L in args.students
    ]
    results: dict[str, Any] = {
        "benchmark": "distill_acac",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": bench_common.machine_info(["torch", "e3nn", "ase", "mace"]),
        "settings": {k: v for k, v in vars(args).items()},
        "distill_config": values,
    }
    start = time.monotonic()
    if args.jobs > 1:
        torch.set_num_threads(args.threads * args.jobs)
        label_everything(config, progress=False)
        torch.set_num_threads(args.threads)
        jobs = [
            ("distill", values | {"sweep": {"students": [entry]}}, args.threads)
            for entry in values["sweep"]["students"]
        ]
        jobs += [("baseline", v, args.threads) for v in baselines if v and not finished_baseline(v)]
        run_jobs(jobs, args.jobs)
    distilled = distill(config, sweep=True, resume=args.jobs > 1, progress=False)
    results["distill_wall_s"] = time.monotonic() - start
    results["counts"] = distilled.counts
    probe = configuration_to_atoms(tests["test_MD_300K"][0][0])
    teacher = load_teacher(config.teacher, probe)
    results["teacher"] = {
        "description": teacher.description,
        "n_parameters": teacher.n_parameters(),
        "errors": evaluate_teacher(teacher, tests),
        "timing_unlocked": distilled.rows[0],
    }
    students = []
    for row, (channels, max_l), baseline_values in zip(
        distilled.rows[1:], args.students, baselines, strict=True
    ):
        model_path = out / "distill" / "students" / row["name"] / "model.pt"
        entry = {
            "channels": channels,
            "max_L": max_l,
            "distilled": {
                "model_path": str(model_path),
                "epochs": row["epochs"],
                "n_parameters": row["n_parameters"],
                "errors": evaluate_model(model_path, tests),
                "teacher_agreement_300K": {
                    "energy_rmse_meV_per_atom": row["teacher_energy_rmse"],
                    "forces_rmse_meV_per_A": row["teacher_forces_rmse"],
                },
            },
        }
        if baseline_values is not None:
            baseline = train_baseline(baseline_values, args.threads)
            baseline["errors"] = evaluate_model(Path(baseline["model_path"]), tests)
            entry["baseline"] = baseline
        students.append(entry)
        save(results | {"students": students}, out)
    results["students"] = students
    return results


def timing_spec(args: argparse.Namespace, structure_file: str, model: dict) -> dict:
    """Spec for ``equiforce.workflows.distill.timing`` (``--compile``: equiforce models compiled)."""
    spec = {
        **model,
        "structure_file": structure_file,
        "calls": args.calls,
        "warmup": 5,
        "threads": 1,
    }
    if args.compile and "model" in model:
        spec["compile"] = True
    return spec


def molecule_grid(source: Path, path: Path, per_axis: int = 4, spacing: float = 12.0) -> Path:
    """``per_axis``^3 copies of the first molecule of ``source`` on a grid (no periodicity).

    The copies are ``spacing`` Å apart (more than r_max), so the model sees independent
    molecules while its cost, not the per-call overhead, dominates the time.
    """
    import numpy as np
    from ase.io import read, write

    molecule = read(source, index=0)
    molecule.positions -= molecule.positions.mean(axis=0)
    grid = molecule.copy()
    del grid[:]
    for i in range(per_axis):
        for j in range(per_axis):
            for k in range(per_axis):
                copy = molecule.copy()
                copy.positions += spacing * np.array([i, j, k], dtype=float)
                grid += copy
    grid.pbc = False
    grid.cell = (0, 0, 0)
    write(path, grid, format="extxyz")
    return path


def phase_time(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Re-time every model (run under the benchmark lock) and draw the Pareto plot.

    Two systems: one AcAc molecule (15 atoms; per-call overhead matters) and 64 AcAc
    molecules in one structure (960 atoms; the model's cost dominates). The Pareto plot uses
    the 64-molecule ms per atom-step.
    """
    from equiforce.workflows.distill.timing import measure_in_subprocess

    results = json.loads((out / "results.json").read_text())
    source = Path(args.data_dir) / "acac" / "test_MD_300K.xyz"
    systems = {"1_acac": str(source)}
    if not args.compile:  # compiled MACE is slower than eager on 960 atoms (docs/performance.md)
        systems["64_acac"] = str(molecule_grid(source, out / "acac64.xyz"))
    timings_key = "timings_compiled" if args.compile else "timings"
    teacher_config = results["distill_config"]["teacher"]
    spec = {k: v for k, v in teacher_config.items() if k in ("model", "calculator", "kwargs")}
    entries = [(results["teacher"], spec)]
    for entry in results["students"]:
        for kind in ("distilled", "baseline"):
            if kind in entry:
                entries.append((entry[kind], {"model": entry[kind]["model_path"]}))
    for system, structure in systems.items():
        for target, model in entries:
            timing = measure_in_subprocess(timing_spec(args, structure, model))
            target.setdefault(timings_key, {})[system] = timing
    machine_key = "timings_compiled_machine" if args.compile else "timing_machine"
    results[machine_key] = bench_common.machine_info(["torch"])
    if not args.compile:
        for target, _ in entries:
            target["timing"] = target["timings"]["64_acac"]
        plot(results, out / "pareto.png")
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    """Pareto plot: test_MD_300K force RMSE against ms per atom-step, all models."""
    from equiforce.workflows.distill.report import plot_pareto

    def row(name, role, entry):
        return {
            "name": name,
            "role": role,
            "ms_per_atom_step": entry["timing"]["ms_per_atom_step"],
            "test_forces_rmse": entry["errors"]["test_MD_300K"]["forces_rmse_meV_per_A"],
        }

    rows = [row("teacher", "teacher", results["teacher"])]
    for entry in results["students"]:
        size = student_label(entry)
        rows.append(row(f"distilled {size}", "student", entry["distilled"]))
        if "baseline" in entry:
            rows.append(row(f"DFT-only {size}", "baseline", entry["baseline"]))
    plot_pareto(rows, path)


def student_label(entry: dict[str, Any]) -> str:
    """``16ch L=1``-style name of a student entry of ``results.json``."""
    return f"{entry['channels']}ch L={entry.get('max_L', 0)}"


def save(results: dict[str, Any], out: Path) -> None:
    """Write ``results.json``."""
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


def print_table(results: dict[str, Any]) -> None:
    """Test errors (and timings when measured) of every model."""
    columns = ["model", "params", "300K E (meV)", "300K F (meV/Å)", "600K E (meV)"]
    columns += ["600K F (meV/Å)", "ms/call 1 AcAc", "ms/call 64 AcAc", "speed-up (1 / 64)"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))

    def ms_per_call(entry, system):
        return entry.get("timings", {}).get(system, {}).get("ms_per_call")

    def line(name, n_params, entry):
        e = entry["errors"]
        times = [ms_per_call(entry, s) for s in ("1_acac", "64_acac")]
        teacher = [ms_per_call(results["teacher"], s) for s in ("1_acac", "64_acac")]
        speed = "-"
        if None not in times + teacher:
            speed = f"{teacher[0] / times[0]:.1f}x / {teacher[1] / times[1]:.1f}x"
        cells = [
            name,
            f"{n_params:,}" if n_params else "-",
            f"{e['test_MD_300K']['energy_rmse_meV']:.1f}",
            f"{e['test_MD_300K']['forces_rmse_meV_per_A']:.1f}",
            f"{e['test_MD_600K']['energy_rmse_meV']:.1f}",
            f"{e['test_MD_600K']['forces_rmse_meV_per_A']:.1f}",
            *("-" if t is None else f"{t:.1f}" for t in times),
            speed,
        ]
        print("| " + " | ".join(cells) + " |")

    line("teacher", results["teacher"]["n_parameters"], results["teacher"])
    for entry in results["students"]:
        c = student_label(entry)
        line(f"distilled {c}", entry["distilled"]["n_parameters"], entry["distilled"])
        if "baseline" in entry:
            line(f"DFT-only {c}", entry["distilled"]["n_parameters"], entry["baseline"])


def student_size(text: str) -> tuple[int, int]:
    """``"16:1"`` -> (16 channels, max_L 1)."""
    channels, _, max_l = text.partition(":")
    try:
        return int(channels), int(max_l or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channels:max_L, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=("train", "baselines", "time"), default="train")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--data-dir", default=str(acac_train.DEFAULT_DATA_DIR))
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--teacher-model", help="equiforce model file")
    teacher.add_argument("--teacher-calculator", help="ASE calculator as module:Class")
    parser.add_argument("--teacher-kwargs", default="{}", help="JSON calculator kwargs")
    parser.add_argument(
        "--students",
        type=student_size,
        nargs="+",
        default=[(8, 0), (16, 0)],
        help="student sizes as channels:max_L",
    )
    parser.add_argument(
        "--rattle", type=float, nargs="*", default=[0.01, 0.02], help="rattle scales, Å"
    )
    parser.add_argument("--budget-s", type=float, default=300.0, help="training loop per student")
    parser.add_argument(
        "--stage-two-fraction",
        type=float,
        default=None,
        help="students: final stage (lr 1e-3, energy weight 1000) after this budget fraction",
    )
    parser.add_argument(
        "--baselines",
        type=student_size,
        nargs="*",
        help="students that get a DFT-only baseline (default: all; none: no value)",
    )
    parser.add_argument("--feature-weight", type=float, default=0.0, help="losses.feature_weight")
    parser.add_argument("--hessian-weight", type=float, default=0.0, help="losses.hessian_weight")
    parser.add_argument(
        "--hessian-structures", type=int, default=None, help="losses.hessian_structures"
    )
    parser.add_argument("--label-cache", help="shared teacher-label cache folder")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process")
    parser.add_argument(
        "--train-frames",
        type=int,
        help="DFT training frames (the first N of the 450; the teacher is not retrained)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="plumbing check: 20 training frames, tiny augmentation"
    )
    parser.add_argument("--jobs", type=int, default=1, help="student trainings at a time")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per model")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time phase: equiforce models compiled (EquiforceCalculator(compile=True)), on the "
        "one-molecule system only; stored as timings_compiled",
    )
    args = parser.parse_args(argv)
    if args.baselines is None:
        args.baselines = list(args.students)
    if args.phase == "train" and args.teacher_model is None and args.teacher_calculator is None:
        parser.error("--teacher-model or --teacher-calculator is required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the requested phase and print the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.phase == "baselines":
        print(json.dumps(phase_baselines(args, out), indent=1))
        return 0
    results = phase_train(args, out) if args.phase == "train" else phase_time(args, out)
    save(results, out)
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
