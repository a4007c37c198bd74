"""What one timed call is: ``inference`` or ``train`` (a force-training step).

* ``inference``: energy + forces (eval mode, forces by autograd, no graph kept);
* ``train``: one optimiser-free training step: energy + forces with ``create_graph``,
  ``step_loss`` and its backward (the double backward of force training), parameter
  gradients cleared before each step.

Our worker and the peers' workers run the same kinds on the same batch, so their times and
first-call outputs compare.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from equiforce.models import Potential

__all__ = ["KINDS", "Call", "check_kind", "potential_call", "step_loss"]

KINDS = ("inference", "train")

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


def potential_call(potential: Potential, batch: dict[str, torch.Tensor], kind: str) -> Call:
    """One call of ``kind`` on an equiforce model; returns detached ``(energy, forces)``.

    Puts ``potential`` in eval mode for ``inference`` and in train mode for ``train``.
    """
    check_kind(kind)
    if kind == "inference":
        potential.eval()

        def infer() -> tuple[torch.Tensor, torch.Tensor]:
            out = potential(batch, compute_forces=True)
            return out["energy"], out["forces"]

        return infer
    potential.train()

    def train_step() -> tuple[torch.Tensor, torch.Tensor]:
        potential.zero_grad(set_to_none=True)
        out = potential(batch, compute_forces=True, create_graph=True)
        step_loss(out["energy"], out["forces"]).backward()
        return out["energy"].detach(), out["forces"].detach()

    return train_step
