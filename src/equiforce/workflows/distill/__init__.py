"""Distillation: label many structures with an accurate teacher, train a fast student on them.

``distill(config)`` (``equiforce distill config.yaml``) runs the whole workflow; see
``docs/distillation.md`` and ``configs/distill_example.yaml``. The teacher is an equiforce model
file or any ASE calculator (``teacher``); the student trains with ``equiforce.train.train`` on
teacher-labelled extxyz files (``prepare``), optionally with feature and Hessian matching
(``auxiliary``) through the trainer's auxiliary-loss hook.
"""

from equiforce.workflows.distill.config import DistillConfig, load_distill_config
from equiforce.workflows.distill.run import DistillResult, distill
from equiforce.workflows.distill.teacher import Teacher, TeacherError, load_teacher

__all__ = [
    "DistillConfig",
    "DistillResult",
    "Teacher",
    "TeacherError",
    "distill",
    "load_distill_config",
    "load_teacher",
]
