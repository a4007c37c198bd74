"""Teacher-labelled student data: augment, label (cached), write files, build matching targets.

``prepare_student_data`` runs the data half of a distillation; each step reads what earlier
runs cached (MD trajectories and normal-mode samples under ``<label cache>/structures``,
labels, features and Hessian-vector products in ``RecordStore`` folders keyed by the
teacher's fingerprint), so an interrupted labelling resumes and further students reuse it.
Under several ranks (``world``) the teacher's work is shared out and every rank ends with the
same data; rank 0 writes the student files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equiforce.data.extxyz import read_configurations
from equiforce.data.graph import Configuration
from equiforce.train.distributed import World
from equiforce.train.setup import key_spec
from equiforce.workflows.distill.augment import augmented_structures, evenly_spaced
from equiforce.workflows.distill.auxiliary import geometry_key
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.data import (
    configuration_to_atoms,
    frames_for,
    labels_to_record,
    record_to_labels,
    validation_frames,
    write_frames,
)
from equiforce.workflows.distill.hessian import probe_vectors
from equiforce.workflows.distill.store import RecordStore, fill_store, store_dir, structure_key
from equiforce.workflows.distill.teacher import CalculatorTeacher, Labels, Teacher


@dataclass(frozen=True)
class StudentData:
    """Files and targets a student trains on.

    Attributes:
        train_file, valid_file: extxyz files (teacher and ground-truth frames).
        targets: geometry key -> feature/Hessian targets of training frames (may be empty).
        counts: number of structures per source (``train``, ``valid``, ``rattle``, ``md``,
            ``normal_modes``) and frames per file (``train_frames``, ``valid_frames``).
        sample: one training configuration (sizes the feature map).
    """

    train_file: Path
    valid_file: Path
    targets: dict[str, dict[str, np.ndarray]]
    counts: dict[str, int]
    sample: Configuration


def label_store(config: DistillConfig, teacher: Teacher) -> RecordStore:
    """The teacher's label cache (energy, forces, stress per structure)."""
    return RecordStore(store_dir(config.label_cache, "labels", teacher.fingerprint, {}))


def teacher_labels(
    config: DistillConfig,
    teacher: Teacher,
    structures: Sequence[Any],
    progress: bool = True,
    world: World | None = None,
) -> list[Labels]:
    """Labels of ``structures``, computing (and caching) only those not cached yet (shared out
    over the ranks of ``world``)."""
    store = label_store(config, teacher)
    fill_store(
        store,
        structures,
        lambda chunk: [labels_to_record(x) for x in teacher.label(chunk)],
        config.labels.save_every,
        "teacher labels",
        progress,
        world,
    )
    return [record_to_labels(store[structure_key(a)]) for a in structures]


def _feature_store(config, teacher, structures, progress, world) -> RecordStore:
    store = RecordStore(store_dir(config.label_cache, "features", teacher.fingerprint, {}))
    fill_store(
        store,
        structures,
        lambda chunk: [{"features": x.features} for x in teacher.label(chunk, features=True)],
        config.labels.save_every,
        "teacher features",
        progress,
        world,
    )
    return store


def _hvp_store(config, teacher, structures, progress, world) -> RecordStore:
    losses = config.losses
    settings = {"n_vectors": losses.hessian_vectors, "seed": config.seed}
    if isinstance(teacher, CalculatorTeacher):
        settings["step"] = losses.hessian_step

    def compute(chunk):
        records = []
        for atoms in chunk:
            vectors = probe_vectors(
                structure_key(atoms), len(atoms), losses.hessian_vectors, config.seed
            )
            products = teacher.hvp(atoms, vectors, losses.hessian_step)
            records.append(
                {"vectors": vectors.transpose(1, 0, 2), "hvp": products.transpose(1, 0, 2)}
            )
        return records

    store = RecordStore(store_dir(config.label_cache, "hvp", teacher.fingerprint, settings))
    save_every = config.labels.save_every
    fill_store(store, structures, compute, save_every, "teacher HVPs", progress, world)
    return store


def _matching_targets(
    config: DistillConfig,
    teacher: Teacher,
    structures: Sequence[Any],
    train_file: Path,
    progress: bool,
    world: World,
) -> dict[str, dict[str, np.ndarray]]:
    """Feature/HVP targets keyed by the geometry of the frames as read back from the file."""
    losses = config.losses
    stores = []
    if losses.feature_weight > 0:
        stores.append(_feature_store(config, teacher, structures, progress, world))
    if losses.hessian_weight > 0:
        count = losses.hessian_structures or len(structures)
        chosen = evenly_spaced(structures, count)
        stores.append(_hvp_store(config, teacher, chosen, progress, world))
    if not stores:
        return {}
    # Teacher frames come first in the file, in the order of ``structures``.
    frames = read_configurations(train_file, key_spec(config.data), f":{len(structures)}")
    targets: dict[str, dict[str, np.ndarray]] = {}
    for atoms, frame in zip(structures, frames, strict=True):
        key = structure_key(atoms)
        record = {}
        for store in stores:
            if key in store:
                record.update(store[key])
        if record:
            targets[geometry_key(frame.atomic_numbers, frame.positions)] = record
    return targets


def prepare_student_data(
    config: DistillConfig,
    teacher: Teacher,
    train: Sequence[Configuration],
    valid: Sequence[Configuration],
    progress: bool = True,
    world: World | None = None,
) -> StudentData:
    """Augment, label, write ``<output_dir>/data/{train,valid}.xyz`` and build targets.

    Args:
        config: the distillation.
        teacher: the teacher.
        train: the user's training structures (labels optional).
        valid: the user's validation structures.
        progress: show progress bars.
        world: the ranks that share the teacher's work out (None: one); every rank calls
            with the same arguments, rank 0 writes the files.

    Returns:
        The files, the matching targets and the structure counts.
    """
    losses = config.losses
    world = World() if world is None else world
    train_atoms = [configuration_to_atoms(c) for c in train]
    valid_atoms = [configuration_to_atoms(c) for c in valid]
    augmented = augmented_structures(
        teacher,
        train_atoms,
        config.augment,
        config.seed,
        config.label_cache / "structures",
        progress,
        world,
    )
    extra = [atoms for kind in ("rattle", "md", "normal_modes") for atoms in augmented[kind]]
    labelled = teacher_labels(config, teacher, train_atoms + extra + valid_atoms, progress, world)
    n_train = len(train_atoms) + len(extra)
    directory = Path(config.output_dir) / "data"
    train_frames = frames_for(
        train, extra, labelled[:n_train], losses.teacher_weight, losses.ground_truth_weight
    )
    valid_frames = validation_frames(valid, labelled[n_train:], losses.validation_labels)
    train_file, valid_file = directory / "train.xyz", directory / "valid.xyz"
    if world.is_main:
        write_frames(train_frames, train_file, config.data)
        write_frames(valid_frames, valid_file, config.data)
    world.barrier("writing the student files")
    targets = {}
    if losses.teacher_weight > 0:
        structures = train_atoms + extra
        targets = _matching_targets(config, teacher, structures, train_file, progress, world)
    counts = {
        "train": len(train),
        "valid": len(valid),
        **{kind: len(items) for kind, items in augmented.items()},
        "train_frames": len(train_frames),
        "valid_frames": len(valid_frames),
    }
    return StudentData(train_file, valid_file, targets, counts, train[0])
