"""The training loop: epochs of optimizer steps, validation, checkpoints, metrics, plots.

``Trainer`` consumes ready-made objects (model, optimizer, schedule, EMA, batch sources,
output paths); it does not read configs or data files (``train.run`` wires those).

Epoch ``e`` (0-based): apply the stage's learning rate and loss; one pass over the training
batches (order fixed by ``(seed, e)`` in the batch source) with gradient clipping and an EMA
update per step; validation with the EMA weights; plateau-scheduler step; then, in this
order, ``best.pt`` + ``model.pt`` (on a new best validation loss), ``last.pt``, a
``metrics.csv`` row. One training step (loss, backward, gradient sum over ranks, clipping,
optimizer, EMA) is ``train.step.OptimizerStep``'s job. Because the shuffle order, the
optimizer, scheduler, EMA and generator states are all in ``last.pt``, a resumed run repeats
the interrupted epoch exactly.

Under several ranks (``train.distributed``) every rank runs this loop on its share of each
global batch; the gradients, the loss and the metrics are reduced over the ranks, and only
rank 0 writes files (checkpoints, model, metrics, plot).

The learning-curve PNG is redrawn when an epoch ends at least ``CURVE_REDRAW_S`` after the
last drawing, and always when training stops (also on divergence): drawing costs ~0.5 s,
which would dominate short epochs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from equiforce.data import keys
from equiforce.data.batch import batch_to
from equiforce.kernels.extension import kernel_ops
from equiforce.models.io import model_payload, save_model
from equiforce.models.potential import Potential
from equiforce.precision import DynamicLossScaler, PrecisionPolicy, precision_scope
from equiforce.train import distributed
from equiforce.train.checkpoint import Progress, capture_rng_state, save_checkpoint
from equiforce.train.curves import plot_learning_curve
from equiforce.train.distributed import World
from equiforce.train.ema import ExponentialMovingAverage
from equiforce.train.losses import LossParts, LossSums, WeightedLoss
from equiforce.train.metrics import ErrorAccumulator, MetricsCSV, group_summary
from equiforce.train.optim import MAIN_STAGE, TrainingSchedule
from equiforce.train.step import NonFiniteLossError, OptimizerStep, with_stress

LOG = logging.getLogger(__name__)

CURVE_REDRAW_S = 30.0  # minimum wall time between two drawings of the learning curve

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RunPaths:
    """Files of a run inside ``output_dir``."""

    output_dir: Path

    @property
    def model(self) -> Path:
        """Best model (EMA weights), ``save_model`` format."""
        return self.output_dir / "model.pt"

    @property
    def best_checkpoint(self) -> Path:
        """Checkpoint of the epoch with the lowest validation loss (current stage)."""
        return self.output_dir / "checkpoints" / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        """Checkpoint of the last completed epoch; ``--resume`` starts from it."""
        return self.output_dir / "checkpoints" / "last.pt"

    @property
    def metrics_csv(self) -> Path:
        """One row per epoch."""
        return self.output_dir / "metrics.csv"

    @property
    def learning_curve(self) -> Path:
        """Loss and force RMSE against epoch."""
        return self.output_dir / "learning_curve.png"

    @property
    def config(self) -> Path:
        """The resolved run configuration (YAML)."""
        return self.output_dir / "config.yaml"

    @property
    def log(self) -> Path:
        """Text log of the run."""
        return self.output_dir / "train.log"


@dataclass(frozen=True)
class BatchSource:
    """Batches of a dataset.

    Attributes:
        batches: ``epoch -> iterable of batch dicts``; the order must depend only on the
            epoch (and a fixed seed) for runs to be reproducible and resumable.
        n_batches: number of batches per pass.
        groups: names of the training files, indexed by the batches' ``dataset_index``:
            validation metrics are also reported per file (``valid_<name>_...``).
    """

    batches: Callable[[int], Iterable[Batch]]
    n_batches: int
    groups: tuple[str, ...] = ()


class Trainer:
    """Runs epochs from ``progress.epochs_done`` to ``max_epochs`` (or the time budget).

    Args:
        model: the potential being trained (on ``device``).
        optimizer: optimizer over the model's parameters.
        schedule: learning rate and loss per epoch.
        ema: EMA of the weights, or None to evaluate the raw weights.
        train_data, valid_data: batch sources (validation ignores the epoch).
        paths: output files.
        config: the run configuration as a plain dict (stored in checkpoints).
        progress: where the run stands (fresh or restored from a checkpoint).
        auxiliary: optional extra training loss (e.g. distillation's feature and Hessian
            matching) in the form of ``WeightedLoss``: ``terms`` (names), ``term_sums(model,
            batch, pred) -> (sums (T,) float64, counts)`` and ``from_sums(sums, totals) ->
            scalar float64`` (``OptimizerStep``); added to the loss of every optimizer step,
            under several ranks exactly as on one (not to the validation loss); its
            parameters must be in ``optimizer``, and its state dict is saved in checkpoints
            (key ``"auxiliary"``) so a resumed run continues it exactly.
        precision: the policy applied to ``model`` (``equiforce.precision.apply_policy``);
            the training steps' backward passes run in its matmul precision.
        scaler: dynamic loss scaling (fp16): a step with non-finite gradients is skipped
            (never applied), counted in the epoch's ``skipped_steps`` (log and history) and
            the scale backs off; its state is checkpointed (key ``"scaler"``).
        world: the ranks (default: one); with several, the batch sources yield this rank's
            share of each global batch (None for an empty share).
    """

    def __init__(
        self,
        model: Potential,
        optimizer: torch.optim.Optimizer,
        schedule: TrainingSchedule,
        ema: ExponentialMovingAverage | None,
        train_data: BatchSource,
        valid_data: BatchSource,
        paths: RunPaths,
        config: Mapping[str, Any],
        progress: Progress,
        auxiliary: torch.nn.Module | None = None,
        precision: PrecisionPolicy | None = None,
        scaler: DynamicLossScaler | None = None,
        world: World | None = None,
    ):
        self.world = World(device=next(model.parameters()).device) if world is None else world
        self.model = model
        self.precision = precision
        self.schedule = schedule
        self.train_data = train_data
        self.valid_data = valid_data
        self.paths = paths
        self.config = dict(config)
        self.progress = progress
        self.settings = schedule.config
        self.device = next(model.parameters()).device
        self.step = OptimizerStep(
            model,
            optimizer,
            ema,
            self.settings.clip_grad_norm,
            self.world,
            auxiliary,
            scaler,
            diverged=self._diverged,
        )

    def fit(self) -> Progress:
        """Train until ``max_epochs`` or the time budget; returns the final progress.

        Raises:
            NonFiniteLossError: a loss or gradient norm was not finite; nothing of the failing
                epoch is saved, ``last.pt`` keeps the last good state.
        """
        if self.device.type == "cpu":
            # the kernel library compiles once per checkout and CPU (~75 s on 2 cores): before
            # the clock starts, so that a first run's time budget is all training
            kernel_ops()
        start = time.monotonic()
        budget = self.settings.time_budget_s
        deadline = None if budget is None else start + budget
        # wall_s accumulates over resumed invocations (the lost part of a killed epoch aside)
        clock_zero = start - (self.progress.history[-1]["wall_s"] if self.progress.history else 0)
        main = self.world.is_main
        csv = MetricsCSV(self.paths.metrics_csv, self.progress.history) if main else None
        epochs = tqdm(
            total=self.settings.max_epochs,
            initial=self.progress.epochs_done,
            desc="epochs",
            unit="epoch",
            disable=not (self.settings.progress_bar and main),
        )
        last_drawn = start
        try:
            with epochs, precision_scope(self.precision):
                while self.progress.epochs_done < self.settings.max_epochs:
                    epoch = self.progress.epochs_done
                    if self._patience_ran_out(epoch):
                        self.progress.stop_reason = "early_stopping"
                        break
                    self.schedule.start_stage_two_if_due(epoch, self._elapsed(start, epoch))
                    out_of_time = self._run_epoch(epoch, deadline, clock_zero, csv)
                    epochs.update(1)
                    if time.monotonic() - last_drawn >= CURVE_REDRAW_S:
                        self._draw_curve()
                        last_drawn = time.monotonic()
                    if out_of_time:
                        self.progress.stop_reason = "time_budget"
                        LOG.info("time budget of %.0f s used up in epoch %d", budget, epoch + 1)
                        break
                else:
                    self.progress.stop_reason = "max_epochs"
        finally:
            self._draw_curve()
        return self.progress

    def _patience_ran_out(self, epoch: int) -> bool:
        """Whether training stops before ``epoch`` (0-based): ``early_stopping_patience``
        epochs without a new best validation loss in the final stage, or in the main stage
        without a final stage to hand over to (with one, it begins at ``epoch``). Decided
        from the checkpointed progress, so a resumed run decides alike."""
        patience, schedule = self.settings.early_stopping_patience, self.schedule
        if patience is None:
            return False
        main = schedule.stage(epoch) == MAIN_STAGE
        best = self.progress.best_epoch  # the final stage counts from its start
        last = best if main else max(best, schedule.stage_two_start)
        if epoch - last < patience:
            return False
        if self.settings.stage_two.enabled and main:
            LOG.info("%d epochs without improvement: the final stage begins", patience)
            schedule.stage_two_start = epoch
            return False
        LOG.info("%d epochs without improvement: training stops (early stopping)", patience)
        return True

    def _elapsed(self, start: float, epoch: int) -> float:
        """Seconds since ``start``: rank 0's under several ranks, so that all decide alike."""
        elapsed = torch.tensor([time.monotonic() - start], dtype=torch.float64)
        what = f"epoch {epoch + 1}: agreeing on the elapsed time"
        return float(self.world.broadcast(elapsed.to(self.world.device), what))

    def _draw_curve(self) -> None:
        if self.progress.history and self.world.is_main:
            plot_learning_curve(self.progress.history, self.paths.learning_curve)

    def _run_epoch(
        self, epoch: int, deadline: float | None, clock_zero: float, csv: MetricsCSV | None
    ) -> bool:
        """One epoch with validation and outputs; returns whether the time budget ran out.

        Args:
            epoch: 0-based epoch.
            deadline: ``time.monotonic()`` value at which the time budget ends, or None.
            clock_zero: ``time.monotonic()`` value that ``wall_s`` counts from.
            csv: the metrics file (None on ranks other than 0).
        """
        if self.schedule.begin_epoch(epoch):
            LOG.info(
                "epoch %d: final stage starts (new loss weights, lr %g)",
                epoch + 1,
                self.schedule.lr,
            )
            self.progress.best_valid_loss = math.inf  # the loss changed; restart best tracking
        loss_fn = self.schedule.loss(epoch)
        lr = self.schedule.lr
        self.step.skipped_steps = 0  # optimizer steps skipped in this epoch (fp16 overflow)
        train_parts, train_errors, out_of_time = self._train_epoch(epoch, loss_fn, deadline)
        what = f"epoch {epoch + 1}: reducing the training metrics"
        train_parts = distributed.reduce_loss_parts(train_parts, loss_fn, self.world, what)
        train_errors = distributed.reduce_errors(train_errors, self.world, what)
        valid_loss, valid_metrics = self._validate(loss_fn)
        if not math.isfinite(valid_loss):
            raise self._diverged(f"epoch {epoch + 1}: validation loss is {valid_loss}")
        self.schedule.end_epoch(epoch, valid_loss)
        row = {
            "epoch": epoch + 1,
            "stage": self.schedule.stage(epoch),
            "lr": lr,
            "train_loss": loss_fn.combine(train_parts),
            "valid_loss": valid_loss,
            **train_errors.metrics("train"),
            **valid_metrics,
            "wall_s": time.monotonic() - clock_zero,
            "skipped_steps": self.step.skipped_steps,
            "loss_scale": math.nan if self.step.scaler is None else self.step.scaler.scale,
        }
        distributed.check_in_sync(self.model, self.world, f"end of epoch {epoch + 1}")
        self._finish_epoch(row, valid_loss)
        if csv is not None:
            csv.append(row)
        LOG.info(
            "epoch %d/%d: train loss %.4g, valid loss %.4g, valid RMSE E %.3f meV/atom, "
            "F %.3f meV/Å, lr %.3g",
            epoch + 1,
            self.settings.max_epochs,
            row["train_loss"],
            valid_loss,
            row["valid_energy_rmse"],
            row["valid_forces_rmse"],
            lr,
        )
        if self.valid_data.groups:
            summary = group_summary(row, "valid", self.valid_data.groups)
            LOG.info("epoch %d: valid RMSE per file: %s", epoch + 1, summary)
        if self.step.scaler is not None:
            LOG.info(
                "epoch %d: %d optimizer steps skipped (non-finite fp16 gradients), loss scale %g",
                epoch + 1,
                self.step.skipped_steps,
                self.step.scaler.scale,
            )
        return out_of_time

    def _train_epoch(
        self, epoch: int, loss_fn: WeightedLoss, deadline: float | None
    ) -> tuple[LossParts, ErrorAccumulator, bool]:
        """Optimizer steps over the training batches of ``epoch``.

        Returns:
            Accumulated loss parts, training errors, and whether the time budget ran out
            (the epoch is then cut short and counts as done).
        """
        self.model.train()
        parts, errors = LossSums(loss_fn), ErrorAccumulator()
        bar = tqdm(
            total=self.train_data.n_batches,
            desc=f"epoch {epoch + 1}",
            unit="batch",
            leave=False,
            disable=not (self.settings.progress_bar and self.world.is_main),
        )
        with bar:
            for step, batch in enumerate(self.train_data.batches(epoch)):
                batch = None if batch is None else batch_to(batch, self.device)
                where = f"epoch {epoch + 1}, step {step + 1}"
                pred, loss, sums = self.step(batch, loss_fn, where, deadline)
                if batch is not None:  # device-side sums: no host synchronisation per step
                    parts.add(*sums)
                    errors.add(batch, pred)
                bar.update(1)
                if (step + 1) % self.settings.log_every == 0:
                    bar.set_postfix(loss=f"{float(loss):.4g}")
                if self.step.out_of_time(deadline):
                    return parts.parts(), errors, True
        return parts.parts(), errors, False

    def _diverged(self, what: str) -> NonFiniteLossError:
        """The error for a non-finite value; nothing of the current epoch has been saved."""
        last = self.paths.last_checkpoint
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint yet"
        return NonFiniteLossError(f"{what}; training stopped, {kept}")

    def _evaluated_weights(self):
        """Context in which the model holds the weights that are evaluated and exported."""
        if self.step.ema is None:
            return contextlib.nullcontext()
        return self.step.ema.average_parameters(self.model)

    def _validate(self, loss_fn: WeightedLoss) -> tuple[float, dict[str, float]]:
        """Validation loss and ``valid_*`` metrics of the evaluated weights (over all ranks)."""
        self.model.eval()
        parts, errors = LossSums(loss_fn), ErrorAccumulator(self.valid_data.groups)
        with self._evaluated_weights(), torch.enable_grad():
            for batch in self.valid_data.batches(0):
                if batch is None:  # this rank's share of a short last batch is empty
                    continue
                batch = batch_to(batch, self.device)
                stress = bool(batch[keys.HAS_STRESS].any())
                pred = self.model(
                    batch, compute_forces=True, compute_stress=stress, create_graph=False
                )
                pred = with_stress({k: v.detach() for k, v in pred.items()}, batch)
                parts.add(*loss_fn.term_sums(batch, pred))
                errors.add(batch, pred)
        self.model.train()
        parts = distributed.reduce_loss_parts(parts.parts(), loss_fn, self.world, "validation loss")
        errors = distributed.reduce_errors(errors, self.world, "validation metrics")
        return loss_fn.combine(parts), errors.metrics("valid")

    def _finish_epoch(self, row: dict[str, Any], valid_loss: float) -> None:
        """Record the epoch; rank 0 writes ``best.pt``/``model.pt`` (if improved), ``last.pt``."""
        progress = self.progress
        progress.epochs_done = int(row["epoch"])
        progress.history.append(row)
        improved = valid_loss < progress.best_valid_loss
        if improved:
            progress.best_valid_loss = valid_loss
            progress.best_epoch = progress.epochs_done
        if not self.world.is_main:
            return
        with self._evaluated_weights():
            evaluated = model_payload(self.model)
            evaluated["state_dict"] = {k: v.clone() for k, v in evaluated["state_dict"].items()}
            if improved:
                save_model(self.model, self.paths.model)
        checkpoint = self._checkpoint(evaluated)
        if improved:
            save_checkpoint(checkpoint, self.paths.best_checkpoint)
        save_checkpoint(checkpoint, self.paths.last_checkpoint)

    def _checkpoint(self, evaluated_payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": evaluated_payload,
            "train_state_dict": {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            },
            "optimizer": self.step.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": None if self.step.ema is None else self.step.ema.state_dict(),
            "auxiliary": None if self.step.auxiliary is None else self.step.auxiliary.state_dict(),
            "scaler": None if self.step.scaler is None else self.step.scaler.state_dict(),
            "progress": self.progress.to_dict(),
            "rng": capture_rng_state(),
            "config": self.config,
            "world_size": self.world.size,  # informative: any world size resumes it
        }
