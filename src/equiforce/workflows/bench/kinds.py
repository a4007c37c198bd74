"""What one timed call is: ``inference``, ``train`` (gradients of the force loss) or
``train-step`` (a whole optimiser step).

* ``inference``: energy + forces (eval mode, forces by autograd, no graph kept);
* ``train``: energy + forces with ``create_graph``, ``step_loss`` and its backward (the double
  backward of force training), parameter gradients cleared before each call; no optimiser
  (what ``benchmarks/mace_train_step`` times). The backward is each code's trainer's: ours
  ``train.step.parameter_backward`` (into the parameters only), the peers' ``plain_backward``
  (``loss.backward()``, as mace-torch's ``tools/train.py`` and nequip's Lightning module call
  it) unless they are given ours (``BenchConfig.peers_same_backward``);
* ``train-step``: ``train`` followed by the optimiser step ``equiforce train`` takes by
  default (``train.optim.build_optimizer`` of a default ``TrainConfig``: Adam with AMSGrad,
  lr 0.01, weight decay 5e-7), so the weights change from call to call
  (``equiforce bench --train-step``). Gradient clipping and the EMA of the trainer are not
  part of it.

Our worker and the peers' workers build their calls with ``training_call`` and run the same
kinds on the same batch, so their times and first-call outputs compare: a call returns the
energies and forces of the weights it started from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from equiforce.models import Potential

__all__ = [
    "KINDS",
    "TRAINING_KINDS",
    "Call",
    "check_kind",
    "plain_backward",
    "potential_call",
    "step_loss",
    "training_call",
]

KINDS = ("inference", "train", "train-step")
TRAINING_KINDS = ("train", "train-step")

Call = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of ``KINDS``."""
    if kind not in KINDS:
        raise ValueError(f"unknown call kind {kind!r}; known: {list(KINDS)}")


def step_loss(energy: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
    """The training step's loss: ``1e-3 * sum(E) + mean(F^2)`` (forces against zero).

    The targets do not change the cost of a step, so generated systems need no labels.
    """
    return 1e-3 * energy.sum() + forces.pow(2).mean()


def plain_backward(loss: torch.Tensor, parameters: list[torch.Tensor]) -> None:
    """``loss.backward()``: every leaf's gradient, the positions' too (the peers' trainers)."""
    loss.backward()


def training_call(
    model: torch.nn.Module,
    forward: Call,
    kind: str,
    backward: Callable[[torch.Tensor, list[torch.Tensor]], None] | None = None,
) -> Call:
    """``forward`` (energies ``(n_graphs,)``, forces ``(n_atoms, 3)`` with their graph kept)
    as a call of a training ``kind`` on ``model``'s parameters; puts ``model`` in train mode.

    The loss is ``step_loss`` in float64 (of float32 or float64 outputs alike); ``backward``
    (``(loss, parameters)``; None: ``train.step.parameter_backward``, the trainer's) runs its
    backward; ``train-step`` builds its optimiser here, once, from
    ``equiforce.train.optim.build_optimizer``.

    Returns:
        The call; it returns the detached energies and forces of the weights it started from.
    """
    if kind not in TRAINING_KINDS:
        raise ValueError(f"not a training kind: {kind!r}; training kinds: {list(TRAINING_KINDS)}")
    from equiforce.train.step import parameter_backward

    backward = parameter_backward if backward is None else backward
    model.train()
    parameters = list(model.parameters())
    optimizer = None
    if kind == "train-step":
        from equiforce.train.config import TrainConfig
        from equiforce.train.optim import build_optimizer

        optimizer = build_optimizer(model, TrainConfig())

    def train_step() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        energy, forces = forward()
        backward(step_loss(energy.double(), forces.double()), parameters)
        if optimizer is not None:
            optimizer.step()
        return energy.detach(), forces.detach()

    return train_step


def potential_call(potential: Potential, batch: dict[str, torch.Tensor], kind: str) -> Call:
    """One call of ``kind`` on an equiforce model; returns detached ``(energy, forces)``.

    Puts ``potential`` in eval mode for ``inference`` and in train mode for the training kinds.
    """
    check_kind(kind)
    if kind == "inference":
        potential.eval()

        def infer() -> tuple[torch.Tensor, torch.Tensor]:
            out = potential(batch, compute_forces=True)
            return out["energy"], out["forces"]

        return infer

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        out = potential(batch, compute_forces=True, create_graph=True)
        return out["energy"], out["forces"]

    return training_call(potential, forward, kind)
