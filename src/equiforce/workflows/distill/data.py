"""The student's data: teacher-labelled structures (and ground-truth copies) as extxyz files.

Distillation reuses the ordinary training pipeline: every training structure the teacher
labelled (augmentations included) becomes a frame of ``<output_dir>/data/train.xyz`` with the
teacher's energy, forces and (for 3D-periodic structures) stress and the per-config weight
``losses.teacher_weight``; training structures that carry ground-truth energies and forces
are also written once more with those labels and ``losses.ground_truth_weight``. Validation
structures go to ``valid.xyz`` once each, with the labels ``losses.validation_labels`` names.
The frames use the label key names of the config's ``data`` section, so its isolated-atoms
file and keys apply unchanged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equiforce.data.dataset import split_train_validation
from equiforce.data.extxyz import read_configurations
from equiforce.data.graph import Configuration
from equiforce.files import atomic_write_text
from equiforce.train.config import DataConfig
from equiforce.train.setup import key_spec
from equiforce.workflows.distill.teacher import Labels


def configuration_to_atoms(config: Configuration):
    """Geometry-only ``ase.Atoms`` of a configuration."""
    from ase import Atoms

    return Atoms(
        numbers=config.atomic_numbers, positions=config.positions, cell=config.cell, pbc=config.pbc
    )


def read_structures(data: DataConfig, seed: int) -> tuple[list[Configuration], list[Configuration]]:
    """Training and validation configurations (labels optional) as configured.

    Without ``valid_file`` a ``valid_fraction`` of the training file is held out, split by
    ``seed`` exactly as a training run would.
    """
    keys = key_spec(data)
    train = read_configurations(data.train_file, keys)
    if data.valid_file is not None:
        return train, read_configurations(data.valid_file, keys)
    return split_train_validation(train, data.valid_fraction, seed)


def labels_to_record(labels: Labels) -> dict[str, np.ndarray]:
    """Cache record of teacher labels (``stress`` zero-filled, flagged by ``has_stress``)."""
    stress = np.zeros((3, 3)) if labels.stress is None else labels.stress
    return {
        "energy": np.asarray([labels.energy], dtype=np.float64),
        "forces": np.asarray(labels.forces, dtype=np.float64),
        "stress": np.asarray(stress, dtype=np.float64).reshape(1, 3, 3),
        "has_stress": np.asarray([labels.stress is not None]),
    }


def record_to_labels(record: dict[str, np.ndarray]) -> Labels:
    """Inverse of ``labels_to_record``."""
    stress = record["stress"][0] if bool(record["has_stress"][0]) else None
    return Labels(energy=float(record["energy"][0]), forces=record["forces"], stress=stress)


@dataclass(frozen=True)
class Frame:
    """One frame of a student data file.

    Attributes:
        atoms: the structure (geometry only).
        labels: energy, forces, stress to write.
        weight: per-config loss weight.
        kind: ``"teacher"`` or ``"ground_truth"``.
    """

    atoms: Any
    labels: Labels
    weight: float
    kind: str


def frames_for(
    configs: Sequence[Configuration],
    extra: Sequence[Any],
    teacher_labels: Sequence[Labels],
    teacher_weight: float,
    ground_truth_weight: float,
) -> list[Frame]:
    """Teacher frames of ``configs`` + ``extra`` (labels in that order), then ground truth.

    Ground-truth frames are written for configurations with both energy and forces.
    """
    structures = [configuration_to_atoms(c) for c in configs] + list(extra)
    frames = []
    if teacher_weight > 0:
        for atoms, labels in zip(structures, teacher_labels, strict=True):
            frames.append(Frame(atoms, labels, teacher_weight, "teacher"))
    if ground_truth_weight > 0:
        for config in configs:
            if config.energy is None or config.forces is None:
                continue
            labels = Labels(energy=config.energy, forces=config.forces, stress=config.stress)
            frames.append(
                Frame(configuration_to_atoms(config), labels, ground_truth_weight, "ground_truth")
            )
    return frames


def validation_frames(
    configs: Sequence[Configuration], teacher_labels: Sequence[Labels], source: str
) -> list[Frame]:
    """One weight-1 frame per validation structure.

    Args:
        configs: the validation structures (ground-truth labels optional).
        teacher_labels: the teacher's labels of ``configs``, in order.
        source: ``"ground_truth"`` (a structure's own energy and forces where it has both,
            else the teacher's labels) or ``"teacher"`` (the teacher's labels throughout).
    """
    frames = []
    for config, labels in zip(configs, teacher_labels, strict=True):
        atoms = configuration_to_atoms(config)
        if source == "ground_truth" and config.energy is not None and config.forces is not None:
            truth = Labels(energy=config.energy, forces=config.forces, stress=config.stress)
            frames.append(Frame(atoms, truth, 1.0, "ground_truth"))
        else:
            frames.append(Frame(atoms, labels, 1.0, "teacher"))
    return frames


def write_frames(frames: Sequence[Frame], path: str | Path, data: DataConfig) -> Path:
    """Write ``frames`` as extxyz with ``data``'s key names, atomically.

    Returns:
        ``path``.
    """
    from ase.io import write

    out = []
    for frame in frames:
        atoms = frame.atoms.copy()
        atoms.info[data.energy_key] = float(frame.labels.energy)
        atoms.info[data.weight_key] = float(frame.weight)
        atoms.info["distill_kind"] = frame.kind
        if frame.labels.stress is not None:
            atoms.info[data.stress_key] = np.asarray(frame.labels.stress).reshape(9)
        atoms.arrays[data.forces_key] = np.asarray(frame.labels.forces, dtype=np.float64)
        out.append(atoms)
    text = io.StringIO()
    write(text, out, format="extxyz")
    return atomic_write_text(text.getvalue(), path)


def student_data_config(data: DataConfig, train_file: Path, valid_file: Path) -> DataConfig:
    """The student run's data section: the written files, no test file (the report has it)."""
    return replace(data, train_file=str(train_file), valid_file=str(valid_file), test_file=None)
