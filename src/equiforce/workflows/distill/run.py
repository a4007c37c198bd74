"""``distill(config)``: the library entry point of ``equiforce distill``.

Steps: read the user's structures; load and probe the teacher; augment, label and write the
student data (``prepare_student_data``, cached); train each student with the ordinary
training pipeline (``equiforce.train.train``, with the feature/Hessian terms through its
auxiliary-loss hook); evaluate teacher and students on the ground-truth test set; time both;
write ``report.json``/``report.md`` (and, for a sweep, ``pareto.png``/``pareto.json``).
With ``sweep.jobs > 1`` the sweep students train ``jobs`` at a time in spawned processes and
are timed one by one afterwards.

Under torchrun (``torchrun --nproc_per_node N -m equiforce distill``) the ranks share the
teacher's work out (MD trajectories, normal modes, labels, features and Hessian-vector
products: each rank a share, then every rank reads all), train each student data-parallel
(the matching terms reduced over the global batch as the force loss is, so the student is the
one rank's to rounding), and rank 0 evaluates, times and writes the report.

Output folder: ``data/`` (student files), ``students/<name>/`` (one training run each, plus
``student_report.json`` once it is evaluated, and ``distill_settings.json``: the teacher
fingerprint and the data, augmentation and loss settings the student started with, which
``--resume`` checks), ``teacher_labels/`` (default label cache),
``report.*``, ``pareto.*``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from equiforce.data.batch import collate
from equiforce.data.extxyz import read_configurations
from equiforce.data.graph import configuration_to_graph
from equiforce.files import atomic_write_text
from equiforce.models.io import load_model
from equiforce.models.potential import NODE_FEATURES, Potential
from equiforce.train import distributed
from equiforce.train.config import ModelConfig, RunConfig
from equiforce.train.distributed import World
from equiforce.train.evaluate import predict
from equiforce.train.run import changed_settings, train
from equiforce.train.setup import key_spec, resolve_device
from equiforce.workflows.distill.auxiliary import DistillationLoss
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.data import (
    configuration_to_atoms,
    read_structures,
    student_data_config,
)
from equiforce.workflows.distill.prepare import StudentData, prepare_student_data, teacher_labels
from equiforce.workflows.distill.report import label_errors, plot_pareto, prefixed, write_report
from equiforce.workflows.distill.teacher import Labels, Teacher, load_teacher
from equiforce.workflows.distill.timing import measure_in_subprocess

LOG = logging.getLogger(__name__)

SETTINGS_FILE = "distill_settings.json"


@dataclass(frozen=True)
class DistillResult:
    """Outcome of ``distill``.

    Attributes:
        output_dir: the distillation folder.
        rows: report rows (teacher first, then the students).
        report_json, report_md: the report files.
        pareto_png, pareto_json: the sweep's plot and data, or None without ``sweep``.
        counts: structures per source and frames per student file.
    """

    output_dir: Path
    rows: list[dict[str, Any]]
    report_json: Path
    report_md: Path
    pareto_png: Path | None
    pareto_json: Path | None
    counts: dict[str, int]


def student_name(override: Mapping[str, Any]) -> str:
    """Folder-safe name of a sweep entry, e.g. ``num_channels-16``."""
    text = "_".join(f"{k}-{v}" for k, v in override.items()) or "student"
    return re.sub(r"[^A-Za-z0-9_.-]+", "", text)


def distill(
    config: DistillConfig,
    sweep: bool = False,
    resume: bool = False,
    progress: bool = True,
    distributed_timeout_s: float = distributed.DEFAULT_TIMEOUT_S,
) -> DistillResult | None:
    """Distil the teacher into the student (or every sweep student).

    Args:
        config: the distillation.
        sweep: train every ``sweep.students`` entry instead of the single student.
        resume: continue interrupted student runs (``--resume`` of ``equiforce train``);
            students already evaluated are kept. The configuration must be unchanged.
        progress: show progress bars (rank 0).
        distributed_timeout_s: under torchrun, seconds a rank waits for the others in a
            collective (keep it above the time the teacher's work can differ between ranks:
            a few teacher calls or one MD trajectory).

    Returns:
        The result on rank 0 (or one rank); None on the other ranks.

    Raises:
        TeacherError: the teacher is unusable.
        ValueError: ``sweep`` without ``sweep.students``, bad data, or ``sweep.jobs > 1``
            under several ranks.
        FileExistsError: a student run exists and ``resume`` is not set.
        RankFailure: another rank died or hung.
    """
    if sweep and not config.sweep.students:
        raise ValueError("--sweep needs sweep.students in the config")
    device = resolve_device(config.training.device)
    with distributed.open_world(device, distributed_timeout_s) as world:
        if world.distributed and sweep and config.sweep.jobs > 1:
            raise ValueError(
                f"sweep.jobs is {config.sweep.jobs}: under torchrun every student trains on "
                "all ranks, one after the other; set sweep.jobs to 1"
            )
        return _distill(config, sweep, resume, progress and world.is_main, world)


def _distill(
    config: DistillConfig, sweep: bool, resume: bool, progress: bool, world: World
) -> DistillResult | None:
    """``distill`` in its world of ranks."""
    out = Path(config.output_dir)
    teacher, data, test, test_labels = label_everything(config, progress, world)
    timing_file = config.data.test_file or config.data.train_file
    if world.is_main:
        teacher_row = _teacher_row(config, teacher, test, test_labels, timing_file)
    rows = [teacher_row] if world.is_main else []
    entries = config.sweep.students if sweep else ({},)
    if sweep and config.sweep.jobs > 1:
        _train_in_parallel(config, resume)
        resume = True  # every student is trained and evaluated: collect (and time) them
    for override in entries:
        name = student_name(override) if sweep else "student"
        model_config = config.student_variant(override)
        args = (name, model_config, data, test, test_labels, resume, timing_file, teacher)
        row = _student(config, *args, world=world)
        if world.is_main:
            row["speedup"] = teacher_row["ms_per_call"] / row["ms_per_call"]
            rows.append(row)
    if not world.is_main:
        return None
    report_json, report_md = write_report(rows, out)
    pareto_png = pareto_json = None
    if sweep:
        pareto_png = plot_pareto(rows, out / "pareto.png")
        pareto_json = atomic_write_text(json.dumps(rows, indent=2), out / "pareto.json")
    return DistillResult(out, rows, report_json, report_md, pareto_png, pareto_json, data.counts)


def _train_in_parallel(config: DistillConfig, resume: bool) -> None:
    """Train and evaluate the sweep students ``sweep.jobs`` at a time, in spawned processes.

    Each worker reads the labels from the cache and writes ``student_report.json`` without
    timings; ``distill`` then times the students one by one.
    """
    threads = config.sweep.threads_per_job or max(1, (os.cpu_count() or 1) // config.sweep.jobs)
    work = [(config, override, resume, threads) for override in config.sweep.students]
    LOG.info("training %d students, %d at a time", len(work), config.sweep.jobs)
    context = multiprocessing.get_context("spawn")
    with context.Pool(config.sweep.jobs, maxtasksperchild=1) as pool:
        pool.map(_train_one_student, work, chunksize=1)


def _train_one_student(work: tuple[DistillConfig, Mapping[str, Any], bool, int]) -> None:
    """Worker of ``_train_in_parallel``: train and evaluate one sweep student, untimed."""
    config, override, resume, threads = work
    torch.set_num_threads(threads)
    teacher, data, test, test_labels = label_everything(config, progress=False)
    name, model_config = student_name(override), config.student_variant(override)
    _student(config, name, model_config, data, test, test_labels, resume, None, teacher)


def label_everything(config: DistillConfig, progress: bool = True, world: World | None = None):
    """Load the teacher and let it label the student data and the test set (cached on disk;
    shared out over the ranks of ``world``, None: one).

    Returns:
        ``(teacher, student data, test configurations or None, teacher labels of the test set
        or None)``. A second call, e.g. from a parallel student process, reads the caches.
    """
    train_set, valid_set = read_structures(config.data, config.seed)
    teacher = load_teacher(config.teacher, configuration_to_atoms(train_set[0]))
    LOG.info("teacher %s (%s)", teacher.description, teacher.fingerprint[:24])
    data = prepare_student_data(config, teacher, train_set, valid_set, progress, world)
    LOG.info("student data: %s", data.counts)
    test = _test_set(config)
    test_labels = None
    if test is not None:
        test_atoms = [configuration_to_atoms(c) for c in test]
        test_labels = teacher_labels(config, teacher, test_atoms, progress, world)
    return teacher, data, test, test_labels


def _test_set(config: DistillConfig):
    if config.data.test_file is None:
        return None
    return read_configurations(config.data.test_file, key_spec(config.data))


def _timing(config: DistillConfig, spec: dict[str, Any], structure_file: str) -> dict[str, float]:
    report = config.report
    spec = {
        **spec,
        "structure_file": str(structure_file),
        "calls": report.timing_calls,
        "warmup": report.warmup_calls,
        "threads": report.threads,
    }
    if "model" in spec:
        spec["compile"] = report.compile
    return measure_in_subprocess(spec)


def _teacher_row(config, teacher: Teacher, test, test_labels, timing_file) -> dict[str, Any]:
    spec = config.teacher
    if spec.model is not None:
        timing_spec = {"model": spec.model, "device": spec.device}
    else:
        timing_spec = {"calculator": spec.calculator, "kwargs": dict(spec.kwargs)}
    row = {"name": "teacher", "role": "teacher", "description": teacher.description}
    row["n_parameters"] = teacher.n_parameters()
    if test is not None:
        row.update(prefixed("test", label_errors(test_labels, test)))
    row.update(_timing(config, timing_spec, timing_file))
    row["speedup"] = 1.0
    return row


def _student(
    config: DistillConfig,
    name: str,
    model_config: ModelConfig,
    data: StudentData,
    test,
    test_labels: list[Labels] | None,
    resume: bool,
    timing_file: str | None,
    teacher: Teacher,
    world: World | None = None,
) -> dict[str, Any] | None:
    """Train (or resume, or reuse) one student and return its report row.

    ``timing_file``: structure to time the student on; ``None`` leaves the timing out (a
    reused row without one is timed when a file is given). Under several ranks (``world``)
    every rank trains; rank 0 evaluates, times and returns the row, the others None.
    """
    world = World() if world is None else world
    run_dir = Path(config.output_dir) / "students" / name
    done = run_dir / "student_report.json"
    settings = student_settings(config, teacher.fingerprint)
    if resume:
        _check_settings(run_dir / SETTINGS_FILE, settings, name)
    if done.exists() and resume:
        if not world.is_main:
            return None
        row = json.loads(done.read_text())
        if timing_file is not None and "ms_per_call" not in row:
            row.update(_timing(config, {"model": row["model_path"]}, timing_file))
            atomic_write_text(json.dumps(row, indent=2), done)
        return row
    run_config = RunConfig(
        output_dir=str(run_dir),
        data=student_data_config(config.data, data.train_file, data.valid_file),
        model=model_config,
        training=config.training,
        seed=config.seed,
    )
    resume_run = resume and (run_dir / "checkpoints" / "last.pt").exists()
    if not resume_run and world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(settings, indent=2), run_dir / SETTINGS_FILE)
    auxiliary = _auxiliary_factory(config, data)
    result = train(run_config, resume_run, auxiliary, world.timeout_s)
    if not world.is_main:
        return None
    model = load_model(result.model_path)
    row: dict[str, Any] = {"name": name, "role": "student", "model": model_config.to_dict()}
    row["model_path"] = str(result.model_path)
    row["n_parameters"] = sum(p.numel() for p in model.parameters())
    row["epochs"] = result.epochs_completed
    if test is not None:
        predicted = predict(model, test, batch_size=config.data.valid_batch_size)
        student_labels = [
            Labels(energy=float(e), forces=f)
            for e, f in zip(predicted.energy, _split_forces(predicted), strict=True)
        ]
        row.update(prefixed("test", label_errors(student_labels, test)))
        row.update(prefixed("teacher", label_errors(student_labels, test_labels)))
    if timing_file is not None:
        row.update(_timing(config, {"model": str(result.model_path)}, timing_file))
    atomic_write_text(json.dumps(row, indent=2), done)
    return row


def student_settings(config: DistillConfig, teacher_fingerprint: str) -> dict[str, Any]:
    """What a student's training depends on beyond its run config, as plain JSON values.

    The teacher (fingerprint), the data files and keys, the augmentation, the loss weights and
    the seed decide the student's files and targets; ``equiforce train``'s own resume check
    covers the model and training sections.
    """
    settings = {
        "teacher": teacher_fingerprint,
        "data": asdict(config.data),
        "augment": asdict(config.augment),
        "losses": asdict(config.losses),
        "seed": config.seed,
    }
    return json.loads(json.dumps(settings, default=str))


def _check_settings(path: Path, settings: dict[str, Any], name: str) -> None:
    """Raise ValueError if a student run being resumed started with other settings."""
    if not path.exists():
        LOG.warning("student %s: %s missing, its settings cannot be checked", name, path)
        return
    changed = changed_settings(json.loads(path.read_text()), settings)
    if changed:
        raise ValueError(
            f"student {name}: cannot resume, the distillation settings differ from those it "
            f"started with ({path}): " + "; ".join(changed)
        )


def _split_forces(predicted) -> list:
    bounds = [0]
    for n in predicted.n_atoms:
        bounds.append(bounds[-1] + int(n))
    return [predicted.forces[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _auxiliary_factory(config: DistillConfig, data: StudentData):
    """Factory of the feature/Hessian loss for ``train``, or None when both are off."""
    losses = config.losses
    if losses.feature_weight == 0 and losses.hessian_weight == 0:
        return None

    def factory(model: Potential) -> DistillationLoss:
        n_features = None
        if losses.feature_weight > 0:
            graph = configuration_to_graph(data.sample, model.type_names, model.r_max)
            with torch.no_grad():
                out = model(collate([graph]), compute_forces=False, extra_outputs=(NODE_FEATURES,))
            n_features = int(out[NODE_FEATURES].shape[1])
        return DistillationLoss(
            data.targets, losses.feature_weight, losses.hessian_weight, n_features, config.seed
        )

    return factory
