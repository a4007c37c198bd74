"""Typed active-learning configuration: YAML -> frozen dataclasses, validated on construction.

A learn file has these sections (``configs/learn_example.yaml`` shows every key with a hint)::

    output_dir: runs/learn
    seed: 0
    start:     {models: [model.pt]}      # a model, several, a committee folder, or [] (train)
    teacher:   {calculator: "ase.calculators.emt:EMT", kwargs: {}}   # the labeller (as distill)
    data:      {train_file: initial.xyz, valid_file: ...}             # train.config.DataConfig
    model:     {family: mace, ...}       # the members' architecture (``{family: mace}`` takes
                                         # the start model's hyperparameters)
    training:  {max_epochs: 20, lr: 0.005}   # each round's fine-tuning (train.config)
    committee: {size: 4, workers: 1}         # workflows.committee.CommitteeConfig
    md:        {structures: start.xyz, temperature_K: 300, n_steps: 500, ...}
    selection: {threshold: 0.1, max_frames: 10, min_separation: 10, stop_after: 50}
    labels:    {cache_dir: null, save_every: 25}
    max_rounds: 5

Unknown keys anywhere are errors naming the full key path (``md.temprature_K``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from equiforce.md.dynamics import BAROSTATS
from equiforce.train.config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
    build_with_model_section,
)
from equiforce.typed_config import check_field, read_yaml_config
from equiforce.workflows.committee import CommitteeConfig
from equiforce.workflows.distill.config import LabelsConfig, TeacherConfig


@dataclass(frozen=True)
class StartConfig:
    """The models the loop starts from.

    Attributes:
        models: model files and/or committee folders (a folder counts as its members). As
            many members as ``committee.size``:
            round 0 uses them as they are; one model: round 0 fine-tunes ``committee.size``
            copies of it (seeds ``seed .. seed+size-1``) on ``data.train_file``; none: round 0
            trains the committee from scratch on it.
    """

    models: tuple[str, ...] = ()

    def __post_init__(self):
        models = self.models
        check_field(isinstance(models, (list, tuple)), "start.models", "must be a list of paths")
        check_field(all(isinstance(m, str) for m in models), "start.models", "must be paths")
        object.__setattr__(self, "models", tuple(models))


@dataclass(frozen=True)
class LearnMDConfig:
    """The exploration MD of each round (Langevin NVT, or NPT with a pressure).

    Attributes:
        structures: file of starting structures (any ASE format); walker ``w`` of round ``k``
            starts from frame ``((k - 1) * walkers + w) mod n_frames`` with velocity seed
            ``seed + k * walkers + w`` (one walker: frame ``k - 1``, seed ``seed + k``).
        walkers: MD runs of a round. One runs through ASE (``equiforce.md.run_md``); several
            run at once through TorchSim (``equiforce.md.run_batched_md``, its BAOAB Langevin;
            the ``sim`` extra), each stopped by its own watch; their flagged frames are
            selected from together.
        temperature_K: thermostat (and start-velocity) temperature, K; or a list of one per
            walker (a temperature ladder: the hotter walkers reach rarer structures).
        timestep_fs: time step, fs.
        n_steps: steps a round runs when nothing is uncertain.
        friction: Langevin friction, 1/fs (NVT).
        log_interval: sampling interval of the trajectory and figures, steps.
        pressure_GPa: None (NVT), or the target pressure, GPa, of an NPT exploration
            (3D-periodic starts; ``equiforce.md`` NPT, the committee's mean stress driving
            the cell): the cells change volume, so strained cells are among the frames
            labelled; or a list of one per walker (a pressure ladder: compressed and
            stretched cells in one round).
        barostat: NPT: ``"berendsen"`` (robust: relaxes towards the pressure), ``"mtk"``
            (Martyna–Tobias–Klein: samples the NPT ensemble's volume fluctuations) or
            ``"c-rescale"`` (stochastic cell rescaling: both).
        anisotropic: NPT: every cell component moves (Berendsen: each cell vector with its
            own pressure component; c-rescale: Del Tatto et al.'s anisotropic form).
        barostat_time_fs: NPT: the barostat time, fs (Berendsen's and c-rescale's ``taup``,
            MTK's ``pdamp``).
    """

    structures: str
    walkers: int = 1
    temperature_K: float | tuple[float, ...] = 300.0
    timestep_fs: float = 1.0
    n_steps: int = 500
    friction: float = 0.02
    log_interval: int = 10
    pressure_GPa: float | tuple[float, ...] | None = None
    barostat: str = "berendsen"
    anisotropic: bool = False
    barostat_time_fs: float = 1000.0

    def __post_init__(self):
        p = "md"
        check_field(bool(self.structures), f"{p}.structures", "is required")
        check_field(self.walkers >= 1, f"{p}.walkers", "must be >= 1")
        temperatures = self.temperature_K
        if isinstance(temperatures, tuple):
            check_field(
                len(temperatures) == self.walkers,
                f"{p}.temperature_K",
                f"{len(temperatures)} temperatures for md.walkers = {self.walkers}: give one, "
                "or one per walker",
            )
        else:
            temperatures = (temperatures,)
        check_field(all(t > 0 for t in temperatures), f"{p}.temperature_K", "must be > 0")
        if isinstance(self.pressure_GPa, tuple):
            check_field(
                len(self.pressure_GPa) == self.walkers,
                f"{p}.pressure_GPa",
                f"{len(self.pressure_GPa)} pressures for md.walkers = {self.walkers}: give "
                "one, or one per walker",
            )
        check_field(self.timestep_fs > 0, f"{p}.timestep_fs", "must be > 0")
        check_field(self.n_steps >= 1, f"{p}.n_steps", "must be >= 1")
        check_field(self.friction > 0, f"{p}.friction", "must be > 0")
        check_field(self.barostat_time_fs > 0, f"{p}.barostat_time_fs", "must be > 0")
        check_field(
            self.barostat in BAROSTATS, f"{p}.barostat", f"must be one of {list(BAROSTATS)}"
        )
        check_field(
            1 <= self.log_interval <= self.n_steps, f"{p}.log_interval", "must be in [1, n_steps]"
        )


# selection.calibration: the raw committee spread, or calibrated (workflows.calibration)
CALIBRATIONS = (None, "one-scale", "per-species")
# selection.strategy: the most uncertain frames, or random frames of the MD (the control)
STRATEGIES = ("uncertainty", "random")


@dataclass(frozen=True)
class SelectionConfig:
    """Which MD frames get labelled.

    Attributes:
        threshold: largest per-atom committee force spread, eV/Å, above which a frame is
            uncertain; a round whose MD runs ``md.n_steps`` without one (every walker) ends the
            loop.
        max_frames: most uncertain frames labelled per round (largest spread first, of all
            walkers).
        min_separation: steps between two selected frames of one walker (decorrelates them).
        stop_after: a walker's MD stops after this many uncertain frames (a model far outside
            its data drifts into nonsense; these frames are enough to choose from).
        calibration: ``null`` (the raw spread), ``one-scale`` or ``per-species``: each round's
            committee is calibrated on ``data.valid_file`` (``workflows.calibration``, one
            force scale or one per species), so ``threshold`` is an expected force error.
        strategy: ``uncertainty`` (the most uncertain flagged frames) or ``random``: the
            control that active learning should beat; the MD runs its whole length (no
            ``stop_after``) and ``max_frames`` of its trajectory frames (every
            ``md.log_interval``-th step, the start excluded) are drawn at random, at least
            ``min_separation`` steps apart, whatever their spread. Convergence is the same
            (an MD without a frame over ``threshold``).
    """

    threshold: float = 0.1
    max_frames: int = 10
    min_separation: int = 10
    stop_after: int = 50
    calibration: str | None = None
    strategy: str = "uncertainty"

    def __post_init__(self):
        p = "selection"
        check_field(self.threshold > 0, f"{p}.threshold", "must be > 0 (eV/Å)")
        check_field(self.max_frames >= 1, f"{p}.max_frames", "must be >= 1")
        check_field(self.min_separation >= 1, f"{p}.min_separation", "must be >= 1")
        check_field(self.stop_after >= 1, f"{p}.stop_after", "must be >= 1")
        check_field(
            self.calibration in CALIBRATIONS,
            f"{p}.calibration",
            "must be null, one-scale or per-species",
        )
        check_field(self.strategy in STRATEGIES, f"{p}.strategy", "must be uncertainty or random")


@dataclass(frozen=True)
class LearnConfig:
    """A whole active-learning loop.

    Attributes:
        output_dir: folder of the rounds (``round_<k>/``), label cache and report.
        data: the initial labelled data (``train_file``; validation as in a run file).
        model: the members' architecture (family required).
        teacher: the labeller, as distillation's teacher: ``calculator`` (any ASE calculator,
            ``"module:Class"`` + ``kwargs``) or ``model`` (an equiforce model file).
        md: the exploration MD.
        start: the starting models.
        training: settings of each fine-tuning (and of round 0's training).
        committee: size and parallelism of the committee.
        selection: the uncertainty threshold and how many frames a round labels.
        labels: the label cache (shared with ``equiforce distill``'s layout).
        max_rounds: rounds of MD + labelling + fine-tuning at most.
        seed: base seed (members, MD).
    """

    output_dir: str
    data: DataConfig
    model: ModelConfig
    teacher: TeacherConfig
    md: LearnMDConfig
    start: StartConfig = field(default_factory=StartConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    committee: CommitteeConfig = field(default_factory=CommitteeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    max_rounds: int = 5
    seed: int = 0

    def __post_init__(self):
        check_field(bool(self.output_dir), "output_dir", "is required")
        check_field(self.max_rounds >= 1, "max_rounds", "must be >= 1")
        check_field(
            self.selection.calibration is None or self.data.valid_file is not None,
            "selection.calibration",
            "needs data.valid_file (labelled validation structures to calibrate on)",
        )

    @property
    def label_cache(self) -> Path:
        """Folder of the label cache."""
        cache = self.labels.cache_dir
        return Path(self.output_dir) / "teacher_labels" if cache is None else Path(cache)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LearnConfig:
        """Build from a nested mapping; unknown keys raise ``ConfigError`` naming the path."""
        return build_with_model_section(cls, values, "learn")


def load_learn_config(path: str | Path, overrides: Sequence[str] = ()) -> LearnConfig:
    """Parse a YAML learn file into a ``LearnConfig``, with ``KEY.PATH=VALUE`` overrides
    (errors name the file and key path)."""
    return read_yaml_config(path, LearnConfig.from_dict, overrides)
