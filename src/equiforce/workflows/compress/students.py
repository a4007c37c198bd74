"""The distillation stage: students of the ladder, trained on teacher labels within a budget.

The data half is the distillation workflow's (``equiforce.workflows.distill``): the input model
is the teacher of a ``DistillConfig`` built from the search's settings; ``label_everything``
augments the training structures (rattled copies, teacher MD, normal modes as configured),
labels them and the validation structures through the resumable label cache
(``<out>/labels``) and writes the student files. Each student is then an ordinary training
run (``equiforce.train.train``) of the teacher's architecture with the rung's overrides, for
``time_budget_s`` seconds of training loop (and at most ``student_epochs`` epochs), in
``<out>/students/<name>``; a run interrupted mid-training continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping

from equiforce.models.potential import Potential
from equiforce.train.config import DATASET_DERIVED_FIELDS, ModelConfig, RunConfig, TrainConfig
from equiforce.train.run import train
from equiforce.typed_config import build_section
from equiforce.workflows.compress.config import CompressConfig
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.data import student_data_config
from equiforce.workflows.distill.prepare import StudentData
from equiforce.workflows.distill.run import label_everything

__all__ = ["distill_config", "label_student_data", "rung_name", "student_model", "train_student"]


def rung_name(rung: Mapping[str, Any]) -> str:
    """Folder-safe name of a rung, e.g. ``num_channels-16_max_L-0``."""
    text = "_".join(f"{k}-{v}" for k, v in rung.items()) or "student"
    return re.sub(r"[^A-Za-z0-9_.-]+", "", text)


def student_model(teacher: Potential, rung: Mapping[str, Any], path: str) -> ModelConfig:
    """The teacher's hyperparameters (dataset constants dropped) with ``rung`` applied."""
    params = {k: v for k, v in teacher.spec_dict().items() if k not in DATASET_DERIVED_FIELDS}
    params.pop("seed", None)
    return ModelConfig(family=teacher.family, params={**params, **rung}, section=path)


def distill_config(config: CompressConfig, teacher: Potential) -> DistillConfig:
    """The distillation whose data half the students train on (teacher: the input model)."""
    first_rung = dict(config.ladder[0]) if config.ladder else {}
    data = {
        "train_file": config.train_file,
        "valid_file": config.valid_file,
        "valid_fraction": config.valid_fraction,
        "isolated_atoms_file": config.isolated_atoms_file,
    }
    values = {
        "output_dir": str(Path(config.out) / "distill"),
        "seed": config.seed,
        "teacher": {"model": config.model},
        "data": {k: v for k, v in data.items() if v is not None},
        "augment": dict(config.augment),
        "labels": {"cache_dir": str(Path(config.out) / "labels")},
        "student": student_model(teacher, first_rung, "ladder[0]").to_dict(),
    }
    return DistillConfig.from_dict(values)


def label_student_data(distill: DistillConfig, progress: bool) -> StudentData:
    """Augment and label (cached) and write the students' files; see ``label_everything``."""
    _, data, _, _ = label_everything(distill, progress)
    return data


def _training(config: CompressConfig, budget_s: float) -> TrainConfig:
    # the tolerances are on energies and forces: stress is not trained unless asked for
    values: dict[str, Any] = {"device": "cpu", "progress_bar": False, "max_epochs": 100000}
    values["stress_weight"] = 0.0
    values.update(config.student_training)
    values["time_budget_s"] = budget_s
    if config.student_epochs is not None:
        values["max_epochs"] = config.student_epochs
    return build_section(TrainConfig, values, "student_training")


def train_student(
    config: CompressConfig,
    distill: DistillConfig,
    data: StudentData,
    model: ModelConfig,
    name: str,
    budget_s: float,
) -> Path:
    """Train (or continue) one student; returns its model file (best validation weights).

    Args:
        config: the search.
        distill: ``distill_config`` output (its data section).
        data: ``label_student_data`` output.
        model: the student's model section.
        name: its folder name under ``<out>/students``.
        budget_s: seconds of training loop.
    """
    run_dir = Path(config.out) / "students" / name
    run = RunConfig(
        output_dir=str(run_dir),
        data=dataclasses.replace(
            student_data_config(distill.data, data.train_file, data.valid_file),
            batch_size=min(distill.data.batch_size, max(1, data.counts["train_frames"])),
        ),
        model=model,
        training=_training(config, budget_s),
        seed=config.seed,
    )
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    return train(run, resume=resume).model_path
