"""Typed run configuration: YAML -> frozen dataclasses, validated on construction.

A run file has these sections (see ``configs/mace_example.yaml`` for every key with a hint)::

    output_dir: runs/cu
    seed: 0
    data:      {train_file: ..., batch_size: ...}       # DataConfig
    model:     {family: mace, r_max: 5.0, ...}          # ModelConfig
    training:  {max_epochs: ..., lr: ..., ema: {...}}   # TrainConfig
    precision: {mode: bf16-mixed}                       # PrecisionConfig (optional)

Unknown keys anywhere are errors naming the full key path (``training.lr_typo``). Validation
lives in each dataclass's ``__post_init__``. Relative file paths are used as given (relative to
the working directory of the process).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from equiforce.models import registry
from equiforce.precision import MODES, OP_CLASSES, PrecisionPolicy
from equiforce.typed_config import ConfigError, build_section, check_field, plain, read_yaml_config

# Spec fields the trainer fills from the training-set statistics (see ``train.setup``), with
# the values of a one-species placeholder dataset used to validate a model section on its own.
DERIVED_PLACEHOLDERS: Mapping[str, Any] = types.MappingProxyType(
    {
        "type_names": ("H",),
        "atomic_energies": (0.0,),
        "avg_num_neighbors": 1.0,
        "scale": 1.0,
        "shift": 0.0,
    }
)
DATASET_DERIVED_FIELDS = tuple(DERIVED_PLACEHOLDERS)


_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class TrainFileConfig:
    """One of several training files (``data.train_files``), with its weight.

    Attributes:
        path: extxyz file; frames may lack forces or stress or carry the energy only (the
            missing terms are masked), but each must have some label.
        weight: multiplies every loss term of this file's frames (> 0); e.g. 0.1 for a replay
            set of a foundation model's training data mixed into a fine-tuning run.
        name: label of the file's columns in ``metrics.csv`` (``valid_<name>_forces_rmse``)
            and in the log; default: the file's stem. Letters, digits, ``_`` and ``-``.
        valid_file: validation file of this data; when absent, ``data.valid_fraction`` of
            ``path`` is held out.
    """

    path: str
    weight: float = 1.0
    name: str | None = None
    valid_file: str | None = None

    @property
    def label(self) -> str:
        """``name``, or the stem of ``path``."""
        return self.name if self.name is not None else Path(self.path).stem


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is read and batched.

    Attributes:
        train_file: extxyz file with the labelled training structures (frames may lack
            forces or stress, or carry the energy only; those terms are masked).
        train_files: instead of ``train_file``: several weighted training files
            (``TrainFileConfig``), each validated on its own (per-file metrics).
        valid_file: extxyz validation file (with ``train_file`` only); when absent,
            ``valid_fraction`` of the training file is held out (split seeded by the run seed).
        valid_fraction: fraction held out when there is no ``valid_file``, in (0, 1).
        test_file: optional extxyz file or preprocessed directory, evaluated (streamed) with
            the best model at the end (``test_metrics.json``).
        isolated_atoms_file: optional extxyz of single-atom structures whose energies are the
            E0s; without it the E0s are fitted by least squares on the training energies.
        energy_key, forces_key, stress_key, virials_key, weight_key: label names in the
            extxyz ``info``/``arrays`` (virials, when present, are converted to stress).
        config_type_key: the frames' config type name in ``info`` (mace-torch's
            ``config_type``): the test set's errors are also reported per type.
        config_type_weights: config type -> weight multiplying the per-structure weight of
            its training and validation frames (mace-torch's ``config_type_weights``; types
            not named: 1), e.g. ``{bulk: 1.0, surface: 2.0}``; None: none.
        total_charge_key, total_spin_key: the frames' net charge and spin multiplicity in
            ``info`` (default ``charge`` and ``spin``; absent: 0 and 1), read by models that
            condition on them (MACE's ``embedding_specs``).
        batch_size: training structures per optimizer step: the *global* batch. Under
            ``torchrun`` with N ranks each rank holds ``batch_size / N`` structures of every
            step (it must be a multiple of N), so one run file is the same optimisation on any
            number of ranks; to keep the per-rank batch when adding ranks, multiply it (see
            ``train.distributed`` and docs/training.md).
        valid_batch_size: structures per validation batch (no gradients kept, so larger);
            also global: split over the ranks.
        cache_dir: folder where every training and validation extxyz file is preprocessed on
            first use into the on-disk format (``equiforce.data.ondisk_cache``: neighbour
            lists built once, keyed by the file's bytes, ``r_max`` and the label keys) and
            read lazily from there by this and later runs; ``None``: files are read into
            memory each run.
    """

    train_file: str | None = None
    train_files: tuple[TrainFileConfig, ...] | None = None
    valid_file: str | None = None
    valid_fraction: float = 0.1
    test_file: str | None = None
    isolated_atoms_file: str | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    virials_key: str = "virials"
    weight_key: str = "config_weight"
    config_type_key: str = "config_type"
    config_type_weights: dict[str, float] | None = None
    total_charge_key: str = "charge"
    total_spin_key: str = "spin"
    batch_size: int = 10
    valid_batch_size: int = 20
    cache_dir: str | None = None

    def __post_init__(self):
        if self.train_files is None:
            check_field(bool(self.train_file), "data.train_file", "is required")
        else:
            self._check_train_files()
        check_field(0.0 < self.valid_fraction < 1.0, "data.valid_fraction", "must be in (0, 1)")
        check_field(self.batch_size >= 1, "data.batch_size", "must be >= 1")
        check_field(self.valid_batch_size >= 1, "data.valid_batch_size", "must be >= 1")
        for kind, weight in (self.config_type_weights or {}).items():
            ok = math.isfinite(weight) and weight >= 0
            check_field(ok, f"data.config_type_weights.{kind}", "must be >= 0")

    def _check_train_files(self) -> None:
        """Build ``train_files`` entries from mappings and validate them (key paths named)."""
        check_field(self.train_file is None, "data.train_file", "give train_file or train_files")
        check_field(
            self.valid_file is None,
            "data.valid_file",
            "not with train_files; give each entry its own valid_file",
        )
        entries = self.train_files
        ok = isinstance(entries, (list, tuple)) and len(entries) > 0
        check_field(ok, "data.train_files", "must be a non-empty list of {path, weight, ...}")
        built, labels = [], {}
        for k, entry in enumerate(entries):
            path = f"data.train_files[{k}]"
            if not isinstance(entry, TrainFileConfig):
                entry = build_section(TrainFileConfig, entry, f"{path}.")
            check_field(bool(entry.path), f"{path}.path", "is required")
            check_field(
                math.isfinite(entry.weight) and entry.weight > 0.0,
                f"{path}.weight",
                f"must be > 0, got {entry.weight}",
            )
            check_field(
                _NAME_PATTERN.fullmatch(entry.label) is not None,
                f"{path}.name",
                f"{entry.label!r} may only hold letters, digits, _ and - (set name:)",
            )
            check_field(
                entry.label not in labels,
                f"{path}.name",
                f"{entry.label!r} is also train_files[{labels.get(entry.label)}]'s; set name:",
            )
            labels[entry.label] = k
            built.append(entry)
        object.__setattr__(self, "train_files", tuple(built))

    def training_files(self) -> tuple[TrainFileConfig, ...]:
        """The training files: ``train_files``, or ``train_file`` as one entry of weight 1."""
        if self.train_files is not None:
            return self.train_files
        return (TrainFileConfig(path=self.train_file, valid_file=self.valid_file),)


@dataclass(frozen=True)
class ModelConfig:
    """Model family and its hyperparameters.

    Attributes:
        family: registered family name (``"mace"``).
        params: the family's spec fields except the dataset-derived ones
            (``DATASET_DERIVED_FIELDS``); checked against the spec dataclass on construction.
            ``seed`` defaults to the run seed when absent.
        section: the key path of this section in its file, for error messages (``model``
            in a run file, ``student`` in a distillation file); not part of the value.
    """

    family: str
    params: Mapping[str, Any] = field(default_factory=dict)
    section: str = field(default="model", compare=False, repr=False)

    def __post_init__(self):
        try:
            fam = registry.family(self.family)
        except KeyError as err:
            raise ConfigError(f"{self.section}.family: {err.args[0]}") from None
        known = {f.name for f in dataclasses.fields(fam.spec_type)}
        for name in self.params:
            check_field(
                name in known,
                f"{self.section}.{name}",
                f"unknown key for family {self.family!r}",
            )
            check_field(
                name not in DATASET_DERIVED_FIELDS,
                f"{self.section}.{name}",
                "is derived from the training set statistics and cannot be set",
            )
        try:
            self.spec()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{self.section}: {err}") from err

    def spec(self) -> Any:
        """The family's spec from ``params``, dataset-derived fields set to placeholders.

        The placeholders (one species "H", E0 0, unit scale) make a valid spec for checks
        and defaults such as ``r_max``; ``train.setup.spec_from_statistics`` replaces them.
        """
        fam = registry.family(self.family)
        known = {f.name for f in dataclasses.fields(fam.spec_type)}
        placeholders = {k: v for k, v in DERIVED_PLACEHOLDERS.items() if k in known}
        return registry.spec_from_dict(fam.spec_type, {**self.params, **placeholders})

    @property
    def r_max(self) -> float:
        """Cutoff radius, Å (the spec's default when not set)."""
        return float(self.spec().r_max)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict as written in YAML (family next to the hyperparameters)."""
        return {"family": self.family, **plain(dict(self.params))}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """The architecture of a ``equiforce.models.presets`` model, to train from scratch.

        The preset's dataset constants (``DATASET_DERIVED_FIELDS``) are dropped: training
        fits them to the training set.

        Args:
            name: a key of ``PRESETS``.
            overrides: spec fields to change (e.g. ``dtype``, ``num_channels``).

        Raises:
            ValueError: unknown preset.
            ConfigError: an override is not a settable field of the family.
        """
        from equiforce.models.presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        family, fields, _ = PRESETS[name]
        params = {k: v for k, v in fields.items() if k not in DATASET_DERIVED_FIELDS}
        return cls(family=family, params={**params, **overrides})


@dataclass(frozen=True)
class SchedulerConfig:
    """ReduceLROnPlateau on the validation loss.

    Attributes:
        factor: multiply the learning rate by this after ``patience`` epochs without a new
            best validation loss, in (0, 1).
        patience: epochs without improvement before reducing.
        min_lr: lower bound of the learning rate.
    """

    factor: float = 0.8
    patience: int = 50
    min_lr: float = 0.0

    def __post_init__(self):
        check_field(0.0 < self.factor < 1.0, "training.scheduler.factor", "must be in (0, 1)")
        check_field(self.patience >= 0, "training.scheduler.patience", "must be >= 0")
        check_field(self.min_lr >= 0.0, "training.scheduler.min_lr", "must be >= 0")


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights (evaluated and exported instead of the raw ones).

    Attributes:
        enabled: keep an EMA.
        decay: per-step decay in (0, 1); the effective decay ramps up as
            ``min(decay, (1 + n) / (10 + n))`` over the first steps.
    """

    enabled: bool = True
    decay: float = 0.99

    def __post_init__(self):
        check_field(0.0 < self.decay < 1.0, "training.ema.decay", "must be in (0, 1)")


@dataclass(frozen=True)
class StageTwoConfig:
    """Final stage (mace-torch's ``--swa``): new loss weights and a lower, constant lr.

    Attributes:
        enabled: run the final stage.
        start_epoch: first epoch (0-based) of the stage; when ``None``, ``start_fraction``
            of ``max_epochs`` is used.
        start_fraction: fraction of ``max_epochs`` after which the stage starts, in (0, 1].
        start_time_fraction: for runs with ``time_budget_s``: start the stage at the first
            epoch that begins after this fraction of the budget has elapsed, in (0, 1)
            (replaces ``start_epoch``/``start_fraction``; the chosen epoch is checkpointed,
            so a resumed run keeps it).
        lr: learning rate during the stage (replaces the plateau schedule).
        energy_weight, forces_weight, stress_weight: loss weights during the stage.
    """

    enabled: bool = False
    start_epoch: int | None = None
    start_fraction: float = 0.75
    start_time_fraction: float | None = None
    lr: float = 1e-3
    energy_weight: float = 1000.0
    forces_weight: float = 100.0
    stress_weight: float = 1.0

    def __post_init__(self):
        path = "training.stage_two"
        check_field(
            self.start_epoch is None or self.start_epoch >= 0, f"{path}.start_epoch", ">= 0"
        )
        check_field(0.0 < self.start_fraction <= 1.0, f"{path}.start_fraction", "must be in (0, 1]")
        fraction = self.start_time_fraction
        check_field(
            fraction is None or 0.0 < fraction < 1.0,
            f"{path}.start_time_fraction",
            "must be in (0, 1) or null",
        )
        check_field(self.lr > 0.0, f"{path}.lr", "must be > 0")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            check_field(getattr(self, name) >= 0.0, f"{path}.{name}", "must be >= 0")

    def first_epoch(self, max_epochs: int) -> int | None:
        """0-based epoch where the stage starts, or ``None`` when disabled."""
        if not self.enabled or self.start_time_fraction is not None:
            return None
        if self.start_epoch is not None:
            return self.start_epoch
        return min(max_epochs - 1, max(1, math.floor(self.start_fraction * max_epochs)))


_PART_PATTERN = re.compile(r"embeddings|readouts|layer_[0-9]+")


@dataclass(frozen=True)
class FinetuneConfig:
    """Which named parts of the model train, and how fast (see ``train.finetune``).

    Part names: ``embeddings`` (species/edge embeddings), ``layer_<k>`` (interaction block
    k, 0-based; MACE: interaction + product, Allegro: tensor product + latent MLP) and
    ``readouts``; an unknown name is an error listing the model's parts.

    Attributes:
        freeze: parts whose parameters do not train (e.g. ``[embeddings, layer_0]``).
        lr_scale: part -> factor on ``training.lr`` (and ``stage_two.lr``), > 0; parts not
            listed train at the full rate.
    """

    freeze: tuple[str, ...] = ()
    lr_scale: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        p = "training.finetune"
        ok = isinstance(self.freeze, (list, tuple)) and all(isinstance(n, str) for n in self.freeze)
        check_field(ok, f"{p}.freeze", f"must be a list of part names, got {self.freeze!r}")
        for name in self.freeze:
            check_field(
                _PART_PATTERN.fullmatch(name) is not None,
                f"{p}.freeze",
                f"unknown part {name!r}; parts are embeddings, layer_<k>, readouts",
            )
        object.__setattr__(self, "freeze", tuple(self.freeze))
        check_field(isinstance(self.lr_scale, Mapping), f"{p}.lr_scale", "must be a mapping")
        scales = {}
        for name, value in self.lr_scale.items():
            check_field(
                isinstance(name, str) and _PART_PATTERN.fullmatch(name) is not None,
                f"{p}.lr_scale.{name}",
                "unknown part; parts are embeddings, layer_<k>, readouts",
            )
            check_field(name not in self.freeze, f"{p}.lr_scale.{name}", "is also frozen")
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            check_field(
                number and math.isfinite(value) and value > 0.0,
                f"{p}.lr_scale.{name}",
                f"must be a number > 0, got {value!r}",
            )
            scales[name] = float(value)
        object.__setattr__(self, "lr_scale", scales)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        max_epochs: number of passes over the training set.
        optimizer: ``"adam"`` or ``"adamw"``.
        amsgrad: use the AMSGrad variant.
        lr: initial learning rate.
        weight_decay: L2 penalty (decoupled for ``adamw``).
        energy_weight: weight of the energy-per-atom MSE, (eV/atom)^-2.
        forces_weight: weight of the per-component force MSE, (eV/Å)^-2.
        stress_weight: weight of the stress MSE, (eV/Å^3)^-2.
        loss: each term's penalty of its errors: ``"mse"`` (squared) or ``"huber"``
            (quadratic up to ``huber_delta``, linear beyond: outliers pull less; mace-torch's
            ``--loss huber``; stage two uses it too).
        huber_delta: where Huber's penalty turns linear, in each term's units (eV/atom,
            eV/Å, eV/Å^3; mace-torch's default 0.01).
        scheduler: ReduceLROnPlateau settings.
        ema: EMA settings.
        clip_grad_norm: maximum gradient 2-norm; ``None`` disables clipping.
        stage_two: final-stage settings.
        time_budget_s: wall time of the training loop (data preparation excluded) after
            which training stops cleanly: the current epoch is cut short, validated,
            checkpointed and exported, and counts as done (a resumed run starts the next).
        early_stopping_patience: epochs without a new best validation loss (of the current
            stage) after which the main stage hands over to the final stage (when enabled
            and not yet begun) or training stops (``stop_reason`` ``"early_stopping"``), as
            mace-torch's ``--patience``; None: never.
        init_model: start from the weights of this model file (anything
            ``equiforce.models.load_model`` reads: a saved or converted model, e.g. a
            mace-torch foundation model through ``interop.mace_torch``, or a training
            checkpoint) instead of a fresh initialisation: fine-tuning, or a trained model
            continued with a new schedule (optimizer, EMA and schedule start afresh). Its
            family must be ``model.family``; the hyperparameters set in ``model`` must equal
            the file's (those left out are taken from it; ``dtype`` converts it); every
            species of the data must be among its ``type_names``; its E0s, average
            neighbour count and scale/shift are kept.
        finetune: frozen parts and per-part learning-rate factors.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        log_every: optimizer steps between progress-bar/log updates of the running loss.
        progress_bar: show tqdm progress bars (epochs and batches, with ETA).
    """

    max_epochs: int = 100
    optimizer: Literal["adam", "adamw"] = "adam"
    amsgrad: bool = True
    lr: float = 0.01
    weight_decay: float = 5e-7
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 1.0
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = 0.01
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    clip_grad_norm: float | None = 10.0
    stage_two: StageTwoConfig = field(default_factory=StageTwoConfig)
    time_budget_s: float | None = None
    early_stopping_patience: int | None = None
    init_model: str | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    device: str = "auto"
    log_every: int = 10
    progress_bar: bool = True

    def __post_init__(self):
        p = "training"
        check_field(self.max_epochs >= 1, f"{p}.max_epochs", "must be >= 1")
        check_field(self.optimizer in ("adam", "adamw"), f"{p}.optimizer", "must be adam or adamw")
        check_field(self.lr > 0.0, f"{p}.lr", "must be > 0")
        check_field(self.weight_decay >= 0.0, f"{p}.weight_decay", "must be >= 0")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            check_field(getattr(self, name) >= 0.0, f"{p}.{name}", "must be >= 0")
        check_field(self.loss in ("mse", "huber"), f"{p}.loss", "must be mse or huber")
        check_field(self.huber_delta > 0.0, f"{p}.huber_delta", "must be > 0")
        clip = self.clip_grad_norm
        check_field(clip is None or clip > 0.0, f"{p}.clip_grad_norm", "must be > 0 or null")
        budget = self.time_budget_s
        check_field(budget is None or budget > 0.0, f"{p}.time_budget_s", "must be > 0 or null")
        patience = self.early_stopping_patience
        check_field(
            patience is None or patience >= 1, f"{p}.early_stopping_patience", ">= 1 or null"
        )
        ok_device = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        check_field(ok_device, f"{p}.device", "must be auto, cpu, cuda or cuda:N")
        check_field(self.log_every >= 1, f"{p}.log_every", "must be >= 1")
        check_field(
            self.stage_two.start_time_fraction is None or budget is not None,
            f"{p}.stage_two.start_time_fraction",
            "needs training.time_budget_s",
        )
        start = self.stage_two.first_epoch(self.max_epochs)
        check_field(
            start is None or start < self.max_epochs,
            f"{p}.stage_two.start_epoch",
            f"must be < max_epochs ({self.max_epochs})",
        )


@dataclass(frozen=True)
class PrecisionConfig:
    """Precision of training (and of the validation/test evaluation during it).

    Attributes:
        mode: named mode (``equiforce.precision.MODES``): ``float64``, ``float32``, ``tf32``
            (TF32 matmuls on GPU; same as float32 on CPU), ``bf16-mixed`` or ``fp16-mixed``
            (float32 weights, the ``autocast_ops`` in bf16/fp16 with float32 accumulation).
            It sets the model dtype, so ``model.dtype`` must agree or be left out. ``null``
            (default): ``model.dtype``, no autocast.
        autocast_ops: op classes run in bf16/fp16 for the mixed modes (``linear``, ``mlp``,
            ``tensor_product``); ``null`` keeps the mode's default (linear layers and MLPs).
        loss_scale_init: fp16 only: initial dynamic loss scale.
        loss_scale_growth_interval: fp16 only: good steps before the scale doubles.
        max_skipped_steps: fp16 only: consecutive steps with non-finite gradients (each
            skipped and counted) after which the run stops as diverged.
    """

    mode: str | None = None
    autocast_ops: list[str] | None = None
    loss_scale_init: float = 65536.0
    loss_scale_growth_interval: int = 2000
    max_skipped_steps: int = 50

    def __post_init__(self):
        p = "precision"
        check_field(
            self.mode is None or self.mode in MODES,
            f"{p}.mode",
            f"must be one of {list(MODES)} or null, got {self.mode!r}",
        )
        if self.autocast_ops is not None:
            ops = self.autocast_ops
            check_field(isinstance(ops, (list, tuple)), f"{p}.autocast_ops", "must be a list")
            unknown = [op for op in ops if op not in OP_CLASSES]
            check_field(
                not unknown, f"{p}.autocast_ops", f"unknown {unknown}; known {list(OP_CLASSES)}"
            )
            object.__setattr__(self, "autocast_ops", list(ops))
            check_field(self.mode is not None, f"{p}.autocast_ops", "needs a mode")
        try:
            self.policy()
        except ValueError as err:
            raise ConfigError(f"{p}: {err}") from None
        check_field(self.loss_scale_init > 0.0, f"{p}.loss_scale_init", "must be > 0")
        check_field(self.loss_scale_growth_interval >= 1, f"{p}.loss_scale_growth_interval", ">= 1")
        check_field(self.max_skipped_steps >= 1, f"{p}.max_skipped_steps", "must be >= 1")

    def policy(self) -> PrecisionPolicy | None:
        """The policy of ``mode`` with ``autocast_ops`` applied; None without a mode."""
        if self.mode is None:
            return None
        ops = None if self.autocast_ops is None else tuple(self.autocast_ops)
        return PrecisionPolicy.from_name(self.mode, ops)


@dataclass(frozen=True)
class RunConfig:
    """A whole training run.

    Attributes:
        output_dir: folder for checkpoints, ``model.pt``, ``metrics.csv`` and plots.
        seed: seeds the model initialisation (unless ``model.seed`` is set), the
            train/valid split and the shuffle order (per epoch).
        data: data settings.
        model: model family and hyperparameters.
        training: optimisation settings.
        precision: precision policy of the run.
    """

    output_dir: str
    data: DataConfig
    model: ModelConfig
    training: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)

    def __post_init__(self):
        check_field(bool(self.output_dir), "output_dir", "is required")
        policy = self.precision.policy()
        dtype = self.model.params.get("dtype")
        check_field(
            policy is None or dtype is None or dtype == policy.model_dtype,
            "model.dtype",
            f"is {dtype!r} but precision.mode {self.precision.mode!r} trains in "
            f"{policy.model_dtype if policy else ''}; leave model.dtype out",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict; ``RunConfig.from_dict(c.to_dict()) == c``."""
        return {
            "output_dir": self.output_dir,
            "seed": self.seed,
            "data": plain(dataclasses.asdict(self.data)),
            "model": self.model.to_dict(),
            "training": plain(dataclasses.asdict(self.training)),
            "precision": plain(dataclasses.asdict(self.precision)),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Build from a nested mapping; unknown keys raise ``ConfigError`` naming the path."""
        return build_with_model_section(cls, values, "run")


def build_with_model_section(cls: type, values: Mapping[str, Any], kind: str) -> Any:
    """Build the config dataclass ``cls`` of a file with a ``model`` section.

    The ``model`` section (``family`` plus the family's hyperparameters, as in a run file)
    becomes a ``ModelConfig``; the other keys are built by ``build_section``.

    Args:
        cls: the file's dataclass (``RunConfig``, ``LearnConfig``, ...).
        values: the parsed file.
        kind: the file's kind, named when the file is not a mapping (``"run"``: "a run
            config must be a mapping").

    Raises:
        ConfigError: the file or its model section is not a mapping, ``family`` is missing, or any
            key is unknown or invalid (naming its key path).
    """
    check_field(isinstance(values, Mapping), "<root>", f"a {kind} config must be a mapping")
    values = dict(values)
    model = values.get("model")
    check_field(isinstance(model, Mapping), "model", "is required and must be a mapping")
    model = dict(model)
    check_field("family" in model, "model.family", "is required")
    values["model"] = ModelConfig(family=model.pop("family"), params=model)
    return build_section(cls, values, "")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Parse a YAML run file into a ``RunConfig``, with ``KEY.PATH=VALUE`` overrides
    (``typed_config.apply_overrides``; errors as ``read_yaml_config``)."""
    return read_yaml_config(path, RunConfig.from_dict, overrides)


def dump_config(config: RunConfig) -> str:
    """YAML text of ``config`` (loads back to an equal ``RunConfig``)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
