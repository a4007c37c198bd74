"""Typed distillation configuration: YAML -> frozen dataclasses, validated on construction.

A distillation file has the sections below (see ``configs/distill_example.yaml`` for every key
with a hint)::

    output_dir: runs/distill
    seed: 0
    teacher:  {model: teacher.pt}  or  {calculator: "ase.calculators.emt:EMT", kwargs: {}}
    data:     {train_file: ..., valid_file: ..., test_file: ...}   # train.config.DataConfig
    augment:  {rattle: {...}, md: {...}, normal_modes: {...}}
    labels:   {cache_dir: ..., save_every: ...}
    losses:   {teacher_weight: ..., feature_weight: ..., hessian_weight: ...}
    student:  {family: mace, num_channels: 16, ...}               # like a run file's model
    training: {...}                                                 # train.config.TrainConfig
    report:   {timing_calls: ...}
    sweep:    {students: [{num_channels: 16}, {num_channels: 32}]}

Unknown keys anywhere are errors naming the full key path (``augment.md.temperature``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from equiforce.train.config import DataConfig, ModelConfig, TrainConfig
from equiforce.typed_config import build_section, check_field, read_yaml_config

# Choices of ``losses.validation_labels``.
VALIDATION_LABELS = ("ground_truth", "teacher")


def _floats(values: Any, path: str, positive: bool = True) -> tuple[float, ...]:
    """A list of finite numbers (each > 0 when ``positive``) as a tuple."""
    check_field(isinstance(values, (list, tuple)), path, f"expected a list, got {values!r}")
    out = []
    for value in values:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        check_field(ok and math.isfinite(value), path, f"expected numbers, got {value!r}")
        check_field(not positive or value > 0, path, f"values must be > 0, got {value!r}")
        out.append(float(value))
    return tuple(out)


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: an equiforce model file or an ASE calculator.

    Attributes:
        model: path of an equiforce model file (``model.pt`` of a training run).
        calculator: ``"module:Class"`` of any ASE calculator, e.g.
            ``"ase.calculators.emt:EMT"`` or ``"mace.calculators:MACECalculator"``.
        kwargs: keyword arguments of the calculator class.
        device: torch device of an equiforce teacher (``"cpu"``, ``"cuda"``).
        batch_size: structures per forward pass when an equiforce teacher labels.
    """

    model: str | None = None
    calculator: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 16

    def __post_init__(self):
        check_field(
            (self.model is None) != (self.calculator is None),
            "teacher",
            "set exactly one of teacher.model (an equiforce model file) and "
            "teacher.calculator ('module:Class' of an ASE calculator)",
        )
        check_field(isinstance(self.kwargs, Mapping), "teacher.kwargs", "must be a mapping")
        check_field(
            self.model is None or not self.kwargs,
            "teacher.kwargs",
            "only applies to teacher.calculator",
        )
        if self.calculator is not None:
            module, _, name = self.calculator.partition(":")
            check_field(
                bool(module) and bool(name),
                "teacher.calculator",
                f"expected 'module:Class', got {self.calculator!r}",
            )
        check_field(self.batch_size >= 1, "teacher.batch_size", "must be >= 1")


@dataclass(frozen=True)
class RattleConfig:
    """Copies of the training structures with Gaussian random displacements.

    Attributes:
        scales: standard deviations of the displacement components, Å (one set of copies
            per scale); empty disables rattling.
        copies: copies per training structure and scale.
    """

    scales: tuple[float, ...] = (0.01, 0.03, 0.06)
    copies: int = 1

    def __post_init__(self):
        object.__setattr__(self, "scales", _floats(self.scales, "augment.rattle.scales"))
        check_field(self.copies >= 0, "augment.rattle.copies", "must be >= 0")


@dataclass(frozen=True)
class MDConfig:
    """Snapshots of Langevin MD driven by the teacher.

    Attributes:
        temperatures: thermostat temperatures, K (one trajectory per start and temperature);
            empty disables MD.
        n_starts: starting structures, evenly spaced over the training set.
        n_snapshots: snapshots kept per trajectory.
        interval: MD steps between snapshots (the first snapshot is after ``interval`` steps).
        timestep_fs: time step, fs.
        friction: Langevin friction, 1/fs.
    """

    temperatures: tuple[float, ...] = (300.0,)
    n_starts: int = 2
    n_snapshots: int = 10
    interval: int = 20
    timestep_fs: float = 0.5
    friction: float = 0.01

    def __post_init__(self):
        p = "augment.md"
        object.__setattr__(self, "temperatures", _floats(self.temperatures, f"{p}.temperatures"))
        check_field(self.n_starts >= 0, f"{p}.n_starts", "must be >= 0")
        check_field(self.n_snapshots >= 1, f"{p}.n_snapshots", "must be >= 1")
        check_field(self.interval >= 1, f"{p}.interval", "must be >= 1")
        check_field(self.timestep_fs > 0, f"{p}.timestep_fs", "must be > 0")
        check_field(self.friction > 0, f"{p}.friction", "must be > 0")


@dataclass(frozen=True)
class NormalModeConfig:
    """Random displacements along the teacher's normal modes (harmonic sampling).

    Attributes:
        n_starts: structures whose teacher Hessian is computed (central differences of the
            teacher's forces, 6 calls per atom); 0 disables normal-mode sampling.
        n_samples: displaced copies per start.
        temperature: temperature of the harmonic sampling, K: mode k is displaced by
            ``sqrt(kB T) / omega_k`` times a standard normal number.
        step: finite-difference step of the Hessian, Å.
    """

    n_starts: int = 0
    n_samples: int = 10
    temperature: float = 300.0
    step: float = 0.005

    def __post_init__(self):
        p = "augment.normal_modes"
        check_field(self.n_starts >= 0, f"{p}.n_starts", "must be >= 0")
        check_field(self.n_samples >= 1, f"{p}.n_samples", "must be >= 1")
        check_field(self.temperature > 0, f"{p}.temperature", "must be > 0")
        check_field(self.step > 0, f"{p}.step", "must be > 0")


@dataclass(frozen=True)
class AugmentConfig:
    """Structures the teacher labels besides the training structures themselves."""

    rattle: RattleConfig = field(default_factory=RattleConfig)
    md: MDConfig = field(default_factory=MDConfig)
    normal_modes: NormalModeConfig = field(default_factory=NormalModeConfig)


@dataclass(frozen=True)
class LabelsConfig:
    """Where teacher labels are cached.

    Attributes:
        cache_dir: folder of the label cache (keyed by the teacher's hash and each
            structure's hash, so several students and reruns share it); ``None`` =
            ``<output_dir>/teacher_labels``.
        save_every: structures labelled between two (atomic) cache writes; an interrupted
            labelling loses at most this many.
    """

    cache_dir: str | None = None
    save_every: int = 25

    def __post_init__(self):
        check_field(self.save_every >= 1, "labels.save_every", "must be >= 1")


@dataclass(frozen=True)
class LossConfig:
    """How teacher labels, ground truth and the optional matching terms are weighted.

    Attributes:
        teacher_weight: per-structure weight of teacher-labelled copies (all structures).
        ground_truth_weight: per-structure weight of copies with the ground-truth labels of
            the training file (where it has them); 0 = teacher labels only.
        feature_weight: weight of the feature-matching MSE (equiforce teachers only): the
            student's per-atom invariant features, mapped by a learned linear map, against
            the teacher's standardised features; 0 disables it.
        hessian_weight: weight of the Hessian-vector-product MSE, (eV/Å^2)^-2; 0 disables it.
        hessian_vectors: random unit vectors per structure for the Hessian term.
        hessian_structures: number of teacher-labelled training structures given Hessian
            targets (evenly spaced); ``None`` = all.
        hessian_step: central-difference step of the teacher HVP for calculator teachers, Å.
        validation_labels: the labels of the validation frames, which drive the learning-rate
            schedule and the choice of the best model: ``"ground_truth"`` (default; each
            validation structure once with its own energy and forces, the teacher's where it
            has none) or ``"teacher"`` (agreement with the teacher).
    """

    teacher_weight: float = 1.0
    ground_truth_weight: float = 1.0
    feature_weight: float = 0.0
    hessian_weight: float = 0.0
    hessian_vectors: int = 1
    hessian_structures: int | None = None
    hessian_step: float = 0.001
    validation_labels: str = "ground_truth"

    def __post_init__(self):
        p = "losses"
        for name in ("teacher_weight", "ground_truth_weight", "feature_weight", "hessian_weight"):
            check_field(getattr(self, name) >= 0.0, f"{p}.{name}", "must be >= 0")
        check_field(
            self.teacher_weight + self.ground_truth_weight > 0,
            f"{p}.teacher_weight",
            "teacher_weight and ground_truth_weight cannot both be 0",
        )
        check_field(self.hessian_vectors >= 1, f"{p}.hessian_vectors", "must be >= 1")
        count = self.hessian_structures
        check_field(count is None or count >= 1, f"{p}.hessian_structures", "must be >= 1 or null")
        check_field(self.hessian_step > 0, f"{p}.hessian_step", "must be > 0")
        check_field(
            self.validation_labels in VALIDATION_LABELS,
            f"{p}.validation_labels",
            f"must be one of {list(VALIDATION_LABELS)}",
        )


@dataclass(frozen=True)
class ReportConfig:
    """Inference timing of teacher and students.

    Attributes:
        timing_calls: timed energy+forces calls per model (median reported).
        warmup_calls: untimed calls before.
        threads: torch threads of the timing processes.
        compile: time equiforce models (teacher and students) compiled
            (``EquiforceCalculator(compile=True)``, Inductor; compiled in the first warm-up
            call, minutes each on a CPU; needs ``warmup_calls`` >= 1); calculator teachers
            run as they are.
    """

    timing_calls: int = 20
    warmup_calls: int = 3
    threads: int = 1
    compile: bool = False

    def __post_init__(self):
        check_field(self.timing_calls >= 1, "report.timing_calls", "must be >= 1")
        check_field(self.warmup_calls >= 0, "report.warmup_calls", "must be >= 0")
        check_field(self.threads >= 1, "report.threads", "must be >= 1")
        check_field(
            not self.compile or self.warmup_calls >= 1,
            "report.warmup_calls",
            "must be >= 1 with report.compile (the first call compiles)",
        )


@dataclass(frozen=True)
class SweepConfig:
    """Students of ``equiforce distill --sweep``.

    Attributes:
        students: overrides of the ``student`` section, one mapping per student, e.g.
            ``[{num_channels: 16}, {num_channels: 32, max_L: 0}]``.
        jobs: students trained at a time, each in its own process (after the teacher has
            labelled everything once); they are timed one after another once all have
            trained, so timings are not disturbed by the others' training.
        threads_per_job: torch threads of each parallel student; ``None``: the machine's
            cores divided by ``jobs`` (at least 1).
    """

    students: tuple[Mapping[str, Any], ...] = ()
    jobs: int = 1
    threads_per_job: int | None = None

    def __post_init__(self):
        check_field(self.jobs >= 1, "sweep.jobs", "must be >= 1")
        threads = self.threads_per_job
        check_field(
            threads is None or threads >= 1, "sweep.threads_per_job", "must be >= 1 or null"
        )
        check_field(isinstance(self.students, (list, tuple)), "sweep.students", "must be a list")
        for k, entry in enumerate(self.students):
            check_field(isinstance(entry, Mapping), f"sweep.students[{k}]", "must be a mapping")
        object.__setattr__(self, "students", tuple(dict(s) for s in self.students))


@dataclass(frozen=True)
class DistillConfig:
    """A whole distillation.

    Attributes:
        output_dir: folder for the student runs, their data, the report and plots.
        teacher: the teacher.
        data: the user's structures (``train_file`` labels optional; ``test_file`` labelled
            with ground truth for the report); same keys as a training run's ``data``.
        student: the student's model section (``family`` + hyperparameters).
        augment, labels, losses, training, report, sweep: see their classes.
        seed: seeds augmentation, the split and the student runs.
    """

    output_dir: str
    teacher: TeacherConfig
    data: DataConfig
    student: ModelConfig
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0

    def __post_init__(self):
        check_field(bool(self.output_dir), "output_dir", "is required")
        check_field(
            self.losses.feature_weight == 0.0 or self.teacher.model is not None,
            "losses.feature_weight",
            "feature matching needs an equiforce teacher (teacher.model)",
        )
        check_field(
            self.losses.teacher_weight > 0
            or self.losses.feature_weight + self.losses.hessian_weight == 0,
            "losses.teacher_weight",
            "feature and Hessian matching need teacher-labelled frames (teacher_weight > 0)",
        )
        for k, override in enumerate(self.sweep.students):
            self.student_variant(override, f"sweep.students[{k}]")

    @property
    def label_cache(self) -> Path:
        """Folder of the teacher-label cache."""
        cache = self.labels.cache_dir
        return Path(self.output_dir) / "teacher_labels" if cache is None else Path(cache)

    def student_variant(self, override: Mapping[str, Any], path: str = "student") -> ModelConfig:
        """The student section with ``override`` applied (a sweep entry)."""
        params = {**self.student.params, **override}
        return ModelConfig(family=self.student.family, params=params, section=path)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DistillConfig":
        """Build from a nested mapping; unknown keys raise ``ConfigError`` naming the path."""
        check_field(isinstance(values, Mapping), "<root>", "a distill config must be a mapping")
        values = dict(values)
        student = values.get("student")
        check_field(isinstance(student, Mapping), "student", "is required and must be a mapping")
        student = dict(student)
        check_field("family" in student, "student.family", "is required")
        values["student"] = ModelConfig(
            family=student.pop("family"), params=student, section="student"
        )
        return build_section(cls, values, "")


def load_distill_config(path: str | Path, overrides: Sequence[str] = ()) -> DistillConfig:
    """Parse a YAML distillation file into a ``DistillConfig``, with ``KEY.PATH=VALUE``
    overrides (``typed_config.apply_overrides``).

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: a key is unknown or a value invalid (the message names the key path), or
            an override is malformed.
    """
    return read_yaml_config(path, DistillConfig.from_dict, overrides)
