"""``train(config, resume)``: the library entry point of a training run.

It reads the data, builds (or restores) the model, optimizer, schedule and EMA, and runs the
``Trainer``. A fresh run refuses an ``output_dir`` that already holds a checkpoint; a resumed
run continues ``checkpoints/last.pt`` exactly, and only settings that do not change the
computation (``RESUMABLE_CHANGES``: more epochs, a time budget, the device, logging, the
output and cache folders) may differ from the checkpoint's configuration.

Under ``torchrun`` every rank calls ``train``: ``train.distributed`` opens the process group,
each rank reads the data and builds the model (rank 0's weights are then broadcast), trains on
its share of every global batch, and only rank 0 writes the log file, ``config.yaml``, the
checkpoints, the model and the test metrics. A resumed run may use another world size: the
batches and the optimisation do not depend on it (up to the reduction order of float sums).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from equiforce.files import atomic_write_text
from equiforce.models.io import model_from_payload
from equiforce.models.potential import Potential
from equiforce.precision import MODES, DynamicLossScaler, apply_policy
from equiforce.train import distributed
from equiforce.train import evaluate as evaluation
from equiforce.train.checkpoint import Progress, load_checkpoint, restore_rng_state
from equiforce.train.config import ModelConfig, PrecisionConfig, RunConfig, dump_config
from equiforce.train.ema import ExponentialMovingAverage
from equiforce.train.optim import TrainingSchedule, build_optimizer
from equiforce.train.setup import (
    TrainingData,
    batch_sources,
    build_model_from_config,
    key_spec,
    model_to_fine_tune,
    prepare_data,
    resolve_device,
)
from equiforce.train.trainer import BatchSource, RunPaths, Trainer
from equiforce.typed_config import ConfigError

LOG = logging.getLogger(__name__)

# Settings a resumed run may change: they do not alter the computed numbers (a different
# device changes them at rounding level only).
RESUMABLE_CHANGES = (
    "output_dir",
    "data.cache_dir",
    "training.max_epochs",
    "training.time_budget_s",
    "training.device",
    "training.log_every",
    "training.progress_bar",
)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of ``train``.

    Attributes:
        output_dir: the run folder.
        model_path: best model (EMA weights), ``equiforce.models.load_model`` format.
        best_checkpoint, last_checkpoint: training checkpoints.
        metrics_csv: per-epoch metrics.
        learning_curve: learning-curve PNG.
        final_metrics: the last epoch's row (``lr``, losses, ``valid_*``/``train_*`` RMSE and
            MAE in meV/atom, meV/Å, meV/Å^3).
        best_epoch: 1-based epoch of ``model_path``.
        epochs_completed: epochs done.
        stop_reason: ``"max_epochs"``, ``"time_budget"`` or ``"early_stopping"``.
        test_metrics_path: ``test_metrics.json`` when ``data.test_file`` is set, else None.
    """

    output_dir: Path
    model_path: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics_csv: Path
    learning_curve: Path
    final_metrics: dict[str, Any]
    best_epoch: int
    epochs_completed: int
    stop_reason: str
    test_metrics_path: Path | None


AuxiliaryFactory = Callable[[Potential], torch.nn.Module]


def train(
    config: RunConfig,
    resume: bool = False,
    auxiliary: AuxiliaryFactory | None = None,
    distributed_timeout_s: float = distributed.DEFAULT_TIMEOUT_S,
) -> TrainResult:
    """Train a model as configured.

    Args:
        config: the run configuration.
        resume: continue from ``output_dir/checkpoints/last.pt``.
        auxiliary: optional factory ``model -> module`` of an extra training loss (see
            ``Trainer``); called once with the built (or restored) model; its parameters are
            optimised with the model's and its state is checkpointed and restored on resume.
            The caller is responsible for passing an equivalent factory when resuming.
        distributed_timeout_s: under torchrun, seconds a rank waits in a collective for the
            others before it stops with ``RankFailure`` (a rank that dies is noticed at once).

    Returns:
        Paths of the outputs and the final validation metrics.

    Raises:
        FileExistsError: a fresh run in an ``output_dir`` that has a checkpoint.
        FileNotFoundError: ``resume`` without a checkpoint.
        ValueError: a resumed run whose configuration changed incompatibly, bad data, or a
            global batch that is not a multiple of the world size.
        NonFiniteLossError: the loss diverged (``last.pt`` keeps the last good epoch).
        RankFailure: under several ranks, another rank died or hung (``last.pt`` keeps the
            last completed epoch).
    """
    paths = RunPaths(Path(config.output_dir))
    checkpoint = _checkpoint_to_resume(paths, config, resume)
    device = resolve_device(config.training.device)
    with distributed.open_world(device, distributed_timeout_s) as world:
        with _run_log(paths.log, world.is_main), _seeded_rng(config.seed):
            progress = _train(config, paths, checkpoint, world, auxiliary)
        world.barrier("end of training")
    if not world.is_main:
        return _result(config, paths, progress, test=False)
    return _result(config, paths, progress)


def _train(
    config: RunConfig,
    paths: RunPaths,
    checkpoint: dict[str, Any] | None,
    world: distributed.World,
    auxiliary: AuxiliaryFactory | None,
) -> Progress:
    """Data, model and trainer on this rank; the progress at the end of training."""
    device = world.device
    LOG.info("training on %s, output in %s", device, paths.output_dir)
    LOG.info(
        "training.world: %s", world.summary(config.data.batch_size, config.data.valid_batch_size)
    )
    if checkpoint is not None and checkpoint.get("world_size", 1) != world.size:
        LOG.info(
            "the checkpoint was written by a run on %d rank(s), this one has %d: the "
            "optimisation is the same up to the rounding of the reductions",
            checkpoint.get("world_size", 1),
            world.size,
        )
    data = prepare_data(config)
    if checkpoint is None:
        model = _initial_model(config, data)
        if world.is_main:
            atomic_write_text(dump_config(config), paths.config)
    else:
        model = model_from_payload(checkpoint["model"], str(paths.last_checkpoint))
        model.load_state_dict(checkpoint["train_state_dict"])
        if tuple(model.type_names) != data.train.type_names:
            raise ValueError(
                f"the training data now has species {list(data.train.type_names)}, the "
                f"checkpoint's model {model.type_names}; the data changed since the run began"
            )
    model = _with_precision(model.to(device), config)
    distributed.broadcast_module(model, world)
    extra = None if auxiliary is None else auxiliary(model).to(device)
    if extra is not None:
        distributed.broadcast_module(extra, world)
    trainer = _trainer(config, model.to(device), data, paths, checkpoint, extra, world)
    return trainer.fit()


def _trainer(
    config: RunConfig,
    model: Potential,
    data: TrainingData,
    paths: RunPaths,
    checkpoint: dict[str, Any] | None,
    auxiliary: torch.nn.Module | None = None,
    world: distributed.World | None = None,
) -> Trainer:
    """Assemble the trainer, restoring component states from ``checkpoint`` if given."""
    settings = config.training
    trained = model if auxiliary is None else torch.nn.ModuleList([model, auxiliary])
    optimizer = build_optimizer(trained, settings)
    schedule = TrainingSchedule(settings, optimizer)
    ema = ExponentialMovingAverage(model, settings.ema.decay) if settings.ema.enabled else None
    progress = Progress()
    scaler = _loss_scaler(config.precision)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        progress = Progress.from_dict(checkpoint["progress"])
        if auxiliary is not None:
            if checkpoint.get("auxiliary") is None:
                raise ValueError("the checkpoint has no auxiliary-loss state to resume")
            auxiliary.load_state_dict(checkpoint["auxiliary"])
        if scaler is not None:
            scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint["rng"])
        LOG.info("resuming after epoch %d", progress.epochs_done)
    train_data, valid_data = _batch_sources(data, config, world)
    return Trainer(
        model,
        optimizer,
        schedule,
        ema,
        train_data,
        valid_data,
        paths,
        config.to_dict(),
        progress,
        auxiliary,
        precision=config.precision.policy(),
        scaler=scaler,
        world=world,
    )


def _batch_sources(
    data: TrainingData, config: RunConfig, world: distributed.World | None
) -> tuple[BatchSource, BatchSource]:
    """``setup.batch_sources`` on one rank; on several, this rank's share of every global
    batch (``distributed.rank_batches``; None for an empty share), as many on every rank."""
    if world is None or not world.distributed:
        return batch_sources(data, config)
    batch_size, valid_batch_size = config.data.batch_size, config.data.valid_batch_size
    world.per_rank_batch(batch_size)  # raises unless a multiple of the world size

    def train_batches(epoch: int):
        return distributed.sharded_loader(data.train, batch_size, world, True, config.seed, epoch)

    def valid_batches(epoch: int):
        return distributed.sharded_loader(data.valid, valid_batch_size, world, shuffle=False)

    return (
        BatchSource(train_batches, -(-len(data.train) // batch_size)),
        BatchSource(valid_batches, -(-len(data.valid) // valid_batch_size), data.groups),
    )


def _initial_model(config: RunConfig, data: TrainingData) -> Potential:
    """A fresh model, or the weights of ``training.init_model`` to fine-tune."""
    model_config = _model_config(config)
    if config.training.init_model is None:
        return build_model_from_config(model_config, data.statistics, config.seed)
    LOG.info("starting from the weights of %s", config.training.init_model)
    return model_to_fine_tune(
        config.training.init_model, model_config, data.statistics, config.seed
    )


def _model_config(config: RunConfig) -> ModelConfig:
    """The model section, its dtype set by the precision mode when one is given."""
    policy = config.precision.policy()
    if policy is None:
        return config.model
    params = {**config.model.params, "dtype": policy.model_dtype}
    return ModelConfig(family=config.model.family, params=params)


def _with_precision(model: Potential, config: RunConfig) -> Potential:
    """``model`` with the run's precision policy applied.

    Without a precision mode that is the plain float mode of the model's dtype, which also
    drops any policy a fine-tuned model file was saved with.
    """
    policy = config.precision.policy()
    if policy is None:
        return apply_policy(model, MODES[str(model.dtype).removeprefix("torch.")])
    LOG.info(
        "precision %s: %s weights, matmul %s, autocast %s on %s",
        policy.name,
        policy.model_dtype,
        policy.matmul,
        policy.autocast,
        ", ".join(policy.autocast_ops) or "nothing",
    )
    return apply_policy(model, policy)


def _loss_scaler(precision: PrecisionConfig) -> DynamicLossScaler | None:
    """Dynamic loss scaling for fp16 runs, None otherwise."""
    policy = precision.policy()
    if policy is None or not policy.needs_loss_scaling:
        return None
    return DynamicLossScaler(
        init_scale=precision.loss_scale_init,
        growth_interval=precision.loss_scale_growth_interval,
        max_consecutive_skips=precision.max_skipped_steps,
    )


def _checkpoint_to_resume(
    paths: RunPaths, config: RunConfig, resume: bool
) -> dict[str, Any] | None:
    """The checkpoint to continue from (None for a fresh run), after consistency checks."""
    last = paths.last_checkpoint
    if not resume:
        if last.exists():
            raise FileExistsError(
                f"{paths.output_dir} already holds a run ({last}); resume it with --resume "
                "or choose another output_dir"
            )
        return None
    if not last.exists():
        raise FileNotFoundError(f"nothing to resume: {last} does not exist")
    checkpoint = load_checkpoint(last)
    # Settings added after the checkpoint was written take their defaults (what that run did).
    try:
        saved = RunConfig.from_dict(checkpoint["config"]).to_dict()
    except ConfigError as err:
        raise ValueError(
            f"{last}: its configuration no longer parses, so the run cannot be resumed: {err}"
        ) from err
    _check_compatible(saved, config.to_dict())
    return checkpoint


def changed_settings(
    saved: dict[str, Any], current: dict[str, Any], allowed: tuple[str, ...] = ()
) -> list[str]:
    """Every dotted key path whose value differs, as ``"path: old -> new"``.

    Args:
        saved: the settings a run started with (nested plain dicts).
        current: the settings of the run that wants to continue it.
        allowed: key paths that may differ (left out of the answer).
    """
    changed = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                walk(a.get(name), b.get(name), f"{path}.{name}" if path else name)
        elif a != b and path not in allowed:
            changed.append(f"{path}: {a!r} -> {b!r}")

    walk(saved, current, "")
    return changed


def _check_compatible(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise naming every key path whose value changed, except ``RESUMABLE_CHANGES``."""
    changed = changed_settings(saved, current, RESUMABLE_CHANGES)
    if changed:
        raise ValueError(
            "the configuration differs from the checkpoint's, so the run cannot be resumed "
            "exactly: " + "; ".join(changed)
        )


def _result(
    config: RunConfig, paths: RunPaths, progress: Progress, test: bool = True
) -> TrainResult:
    """The outcome; ``test``: evaluate ``data.test_file`` (rank 0 only)."""
    test_path = None
    if test and config.data.test_file is not None and paths.model.exists():
        test_path = _evaluate_test_set(config, paths)
    return TrainResult(
        output_dir=paths.output_dir,
        model_path=paths.model,
        best_checkpoint=paths.best_checkpoint,
        last_checkpoint=paths.last_checkpoint,
        metrics_csv=paths.metrics_csv,
        learning_curve=paths.learning_curve,
        final_metrics=dict(progress.history[-1]) if progress.history else {},
        best_epoch=progress.best_epoch,
        epochs_completed=progress.epochs_done,
        stop_reason=progress.stop_reason or "max_epochs",
        test_metrics_path=test_path,
    )


def _evaluate_test_set(config: RunConfig, paths: RunPaths) -> Path:
    """Errors of the best model on ``data.test_file`` (extxyz or a preprocessed directory,
    streamed), written to ``test_metrics.json``."""
    from equiforce.models.io import load_model

    model = _with_precision(load_model(paths.model), config)
    keys = dataclasses.replace(key_spec(config.data), config_type_weights=())  # no loss here
    test = evaluation.structures_in(config.data.test_file, model, keys)
    result = evaluation.evaluate(model, test, batch_size=config.data.valid_batch_size)
    path = paths.output_dir / "test_metrics.json"
    evaluation.to_json(result, path)
    LOG.info("test set:\n%s", evaluation.format_table(result))
    return path


@contextlib.contextmanager
def _seeded_rng(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch generators for the run; restore the caller's after."""
    saved = (random.getstate(), np.random.get_state())
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


@contextlib.contextmanager
def _run_log(path: Path, enabled: bool = True) -> Iterator[None]:
    """Also log ``equiforce`` INFO messages to ``path`` during the run (when ``enabled``)."""
    if not enabled:  # ranks other than 0 log warnings to their stderr only
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("equiforce")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
