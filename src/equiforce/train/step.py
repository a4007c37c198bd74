"""One optimizer step of the training loop: predict, loss, backward, gradient sum, update.

``OptimizerStep`` is what the trainer runs for every training batch: the model's energies and
forces (stress when the loss needs it), the loss from ``WeightedLoss.term_sums`` (computed
once, for the loss and the epoch's metrics), its backward (scaled under fp16 loss scaling),
under several ranks the exact sharded loss and the gradient sum (``train.distributed``),
then gradient clipping, the optimizer (fused Adam, ``train.optim``) and the EMA update.

Per-step host synchronisations are the ones decisions need: the finiteness of the loss and
of the gradient norm (and, on several ranks, the collectives); the epoch's loss sums and
errors stay on the device (``LossSums``, ``ErrorAccumulator``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch

from equiforce.data import keys
from equiforce.models.potential import Potential
from equiforce.precision import DynamicLossScaler
from equiforce.train import distributed
from equiforce.train.distributed import World
from equiforce.train.ema import ExponentialMovingAverage
from equiforce.train.losses import WeightedLoss

LOG = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
TermSums = tuple[torch.Tensor, tuple[int, ...]]  # WeightedLoss.term_sums of one batch


def parameter_backward(loss: torch.Tensor, parameters: list[torch.Tensor]) -> None:
    """``loss.backward()`` into ``parameters`` only (those that require grad).

    A force loss depends on the positions, which require grad for the forces; a plain
    ``backward()`` would also make the loss's gradient with respect to them (through the edge
    vectors and their spherical harmonics), which no step uses. With ``inputs`` autograd runs
    only the nodes on a path to a parameter, and the custom kernels' backwards skip the
    gradients it will not use (``equiforce.kernels.backward_needs``): a mace-128-l1 force
    training step 1.05-1.07x, the parameter gradients bit-identical.
    """
    inputs = [p for p in parameters if p.requires_grad]
    if inputs:
        loss.backward(inputs=inputs)
    else:
        loss.backward()


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the last checkpoint is the last good state."""


class OptimizerStep:
    """Runs optimizer steps on training batches (one rank's share under several ranks).

    Args:
        model: the potential being trained.
        optimizer: optimizer over the model's (and the auxiliary loss's) parameters.
        ema: EMA of the weights, updated after every applied step, or None.
        clip_grad_norm: maximum gradient norm, or None for no clipping.
        world: the ranks.
        auxiliary: optional extra loss in the ``WeightedLoss`` form: ``term_sums(model, batch,
            pred) -> (sums (T,), counts)`` and ``from_sums(sums, totals) -> scalar``, so that
            under several ranks its terms are divided by their counts over the global batch
            like the main loss's; its ``extra_outputs`` (if any) are the model outputs it reads
            from ``pred``.
        scaler: dynamic loss scaling (fp16), or None.
        diverged: builds the error raised for a non-finite loss or gradient norm (the
            trainer's, which names the last good checkpoint).

    Attributes:
        skipped_steps: steps skipped for non-finite fp16 gradients since the last reset.
        time_is_up: several ranks: whether any rank was past the deadline in the last step.
    """

    def __init__(
        self,
        model: Potential,
        optimizer: torch.optim.Optimizer,
        ema: ExponentialMovingAverage | None,
        clip_grad_norm: float | None,
        world: World,
        auxiliary: torch.nn.Module | None = None,
        scaler: DynamicLossScaler | None = None,
        diverged: Callable[[str], Exception] = NonFiniteLossError,
    ):
        self.model = model
        self.optimizer = optimizer
        self.ema = ema
        self.clip_grad_norm = clip_grad_norm
        self.world = world
        self.auxiliary = auxiliary
        self.extra_outputs = frozenset(getattr(auxiliary, "extra_outputs", ()))
        self.scaler = scaler
        self.diverged = diverged
        self.device = next(model.parameters()).device
        self.skipped_steps = 0
        self.time_is_up = False

    def __call__(
        self,
        batch: Batch | None,
        loss_fn: WeightedLoss,
        where: str,
        deadline: float | None = None,
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor, TermSums | None]:
        """One optimizer step.

        Args:
            batch: this rank's batch on the device (None for an empty share).
            loss_fn: the epoch's loss.
            where: epoch and step, for errors.
            deadline: ``time.monotonic()`` at which the time budget ends, or None.

        Returns:
            This rank's detached predictions (None for an empty share), the detached loss of
            the (global) batch, and this rank's ``term_sums`` (detached; None when empty).
        """
        self.optimizer.zero_grad(set_to_none=True)
        pred, sums, counts = None, None, (0,) * len(loss_fn.terms)
        extra = None
        if batch is not None:
            pred = self._predict(batch, loss_fn)
            sums, counts = loss_fn.term_sums(batch, pred)  # once, for the loss and the metrics
            if self.auxiliary is not None:
                extra = self.auxiliary.term_sums(self.model, batch, pred)
        if self.world.distributed:
            loss = self._sharded_backward((sums, counts), extra, loss_fn, deadline, where)
        else:
            loss = loss_fn.from_sums(sums, counts)
            if extra is not None:
                loss = loss + self.auxiliary.from_sums(*extra)
            if not torch.isfinite(loss):
                raise self.diverged(f"{where}: training loss is {float(loss.detach())}")
            self._backward(loss)
        if self.scaler is None or self._unscale(where):
            self._apply_gradients(where)
        detached = None if pred is None else {k: v.detach() for k, v in pred.items()}
        return detached, loss.detach(), None if sums is None else (sums.detach(), counts)

    def out_of_time(self, deadline: float | None) -> bool:
        """Whether the time budget ran out (as agreed by the ranks in the last step)."""
        if self.world.distributed:
            return self.time_is_up
        return deadline is not None and time.monotonic() > deadline

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of the model and of the auxiliary loss (gradient clipping)."""
        extra = [] if self.auxiliary is None else list(self.auxiliary.parameters())
        return list(self.model.parameters()) + extra

    def _predict(self, batch: Batch, loss_fn: WeightedLoss) -> dict[str, torch.Tensor]:
        """Energies and forces (and stress when the loss needs it) for a training step."""
        stress = loss_fn.needs_stress and bool(batch[keys.HAS_STRESS].any())
        pred = self.model(
            batch, compute_forces=True, compute_stress=stress, extra_outputs=self.extra_outputs
        )
        if loss_fn.needs_stress:
            pred = with_stress(pred, batch)
        return pred

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward of the loss (scaled when loss scaling is on)."""
        scaled = loss if self.scaler is None else self.scaler.scale_loss(loss)
        parameter_backward(scaled, self.trained_parameters())

    def _sharded_backward(
        self,
        terms: tuple[torch.Tensor | None, tuple[int, ...]],
        extra: tuple[torch.Tensor, tuple[int, ...]] | None,
        loss_fn: WeightedLoss,
        deadline: float | None,
        where: str,
    ) -> torch.Tensor:
        """Backward of this rank's share and the gradient sum over ranks (several ranks).

        Args:
            terms: this rank's ``term_sums`` (None and zeros for an empty share).
            extra: the auxiliary loss's ``term_sums`` of this rank's share (None for an empty
                share or without one).

        Returns:
            The loss of the global batch (equal on every rank).
        """
        sums, counts = terms
        n_extra = 0 if self.auxiliary is None else len(self.auxiliary.terms)
        extra_counts = (0,) * n_extra if extra is None else extra[1]
        totals = distributed.global_counts((*counts, *extra_counts), self.world, where)
        if sums is None:
            share = torch.zeros((), dtype=torch.float64, device=self.device)
        else:
            share = loss_fn.from_sums(sums, totals[: len(counts)])  # sum_k w_k S_k^r / N_k
        if extra is not None:
            share = share + self.auxiliary.from_sums(extra[0], totals[len(counts) :])
        if share.requires_grad:
            self._backward(share)
        late = float(deadline is not None and time.monotonic() > deadline)
        loss, n_late = distributed.reduce_gradients(
            self.trained_parameters(), self.world, [float(share.detach()), late], where
        )
        self.time_is_up = n_late > 0
        if not math.isfinite(loss):
            raise self.diverged(f"{where}: training loss is {loss}")
        return torch.tensor(loss, dtype=torch.float64)

    def _apply_gradients(self, where: str) -> None:
        """Clip, step the optimizer, update the EMA."""
        if self.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters(), self.clip_grad_norm)
            if not torch.isfinite(norm):
                raise self.diverged(f"{where}: gradient norm is {float(norm)}")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def _unscale(self, where: str) -> bool:
        """Unscale the gradients (fp16); False when the step must be skipped."""
        scaler = self.scaler
        finite = scaler.unscale_(self.trained_parameters())
        scaler.update(finite)
        if finite:
            return True
        self.skipped_steps += 1
        LOG.warning(
            "%s: non-finite gradients, step skipped; loss scale now %g", where, scaler.scale
        )
        if scaler.diverged:
            raise self.diverged(
                f"{where}: {scaler.consecutive_skips} consecutive steps had non-finite gradients"
            )
        return False


def with_stress(pred: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    """Add a zero stress prediction where none was computed (no stress labels in the batch).

    The stress loss and metrics mask graphs without labels, so the zeros never count; this
    saves the strain derivative on batches that carry no stress.
    """
    if keys.STRESS not in pred:
        pred[keys.STRESS] = torch.zeros_like(batch[keys.STRESS])
    return pred
