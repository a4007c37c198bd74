"""Weighted, masked loss terms over batch dicts, and their weighted sum.

Every term maps ``(batch, pred)`` to per-element penalties of the errors (``squared``: the
MSE's, or ``huber(delta)``: quadratic up to ``delta``, linear beyond, less pulled by
outliers, as mace-torch's ``--loss huber``), already multiplied by the per-config weight and
the ``has_*`` label mask; the loss is their mean over *all* elements of the batch, so
unlabelled entries count as zero (as in mace-torch, where a missing label is a zero weight).
Terms also expose the sum and element count, so a dataset-level loss can be accumulated over
batches independently of the batch size.

Losses are computed in float64 (the data dtype) whatever the model dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from equiforce.data import keys

Tensor = torch.Tensor
Penalty = Callable[[Tensor], Tensor]  # elementwise, of the errors (prediction - label)


def squared(errors: Tensor) -> Tensor:
    """The MSE's penalty, ``e^2``."""
    return errors.square()


def huber(delta: float) -> Penalty:
    """Huber's penalty: ``e^2 / 2`` for ``|e| <= delta``, ``delta (|e| - delta / 2)`` beyond
    (torch's ``huber_loss``; ``delta`` in the term's units: eV/atom, eV/Å, eV/Å^3).

    Raises:
        ValueError: ``delta`` <= 0.
    """
    if not delta > 0:
        raise ValueError(f"the Huber delta must be positive, got {delta}")

    def penalty(errors: Tensor) -> Tensor:
        zero = torch.zeros_like(errors)
        return torch.nn.functional.huber_loss(errors, zero, reduction="none", delta=delta)

    return penalty


def _graph_sizes(batch: Mapping[str, Tensor]) -> Tensor:
    ptr = batch[keys.PTR]
    return ptr[1:] - ptr[:-1]


def _graph_factor(batch: Mapping[str, Tensor], weight_key: str, mask_key: str) -> Tensor:
    """(n_graphs,) float64: per-config weight times the label mask."""
    weight = batch[weight_key].to(torch.float64)
    return weight * batch[mask_key].to(torch.float64)


class EnergyPerAtomLoss:
    """Penalty of the energy-per-atom error, one element per graph.

    Args:
        penalty: ``squared`` (MSE, (eV/atom)^2) or ``huber(delta)``.
    """

    name = "energy"

    def __init__(self, penalty: Penalty = squared) -> None:
        self.penalty = penalty

    def errors(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Weighted, masked penalties.

        Args:
            batch: batch dict with ``energy`` (n_graphs,), ``ptr``, ``energy_weight`` and
                ``has_energy``.
            pred: model output with ``energy`` (n_graphs,) float64, eV.

        Returns:
            (n_graphs,) float64.
        """
        n_atoms = _graph_sizes(batch).to(torch.float64)
        diff = (pred[keys.ENERGY] - batch[keys.ENERGY]) / n_atoms
        return _graph_factor(batch, keys.ENERGY_WEIGHT, keys.HAS_ENERGY) * self.penalty(diff)

    def __call__(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Mean over graphs, scalar float64."""
        return self.errors(batch, pred).mean()


class ForcesLoss:
    """Penalty of each force component's error, three elements per atom.

    Args:
        penalty: ``squared`` (MSE, (eV/Å)^2) or ``huber(delta)``.
    """

    name = "forces"

    def __init__(self, penalty: Penalty = squared) -> None:
        self.penalty = penalty

    def errors(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Weighted, masked penalties.

        Args:
            batch: batch dict with ``forces`` (n_atoms, 3), ``batch``, ``forces_weight`` and
                ``has_forces``.
            pred: model output with ``forces`` (n_atoms, 3) float64, eV/Å.

        Returns:
            (n_atoms, 3) float64.
        """
        factor = _graph_factor(batch, keys.FORCES_WEIGHT, keys.HAS_FORCES)[batch[keys.BATCH]]
        diff = pred[keys.FORCES] - batch[keys.FORCES]
        return factor[:, None] * self.penalty(diff)

    def __call__(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Mean over atoms and components, scalar float64."""
        return self.errors(batch, pred).mean()


class StressLoss:
    """Penalty of each stress component's error, nine elements per graph.

    Args:
        penalty: ``squared`` (MSE, (eV/Å^3)^2) or ``huber(delta)``.
    """

    name = "stress"

    def __init__(self, penalty: Penalty = squared) -> None:
        self.penalty = penalty

    def errors(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Weighted, masked penalties.

        Args:
            batch: batch dict with ``stress`` (n_graphs, 3, 3), ``stress_weight`` and
                ``has_stress``.
            pred: model output with ``stress`` (n_graphs, 3, 3) float64, eV/Å^3.

        Returns:
            (n_graphs, 3, 3) float64.
        """
        factor = _graph_factor(batch, keys.STRESS_WEIGHT, keys.HAS_STRESS)
        diff = pred[keys.STRESS] - batch[keys.STRESS]
        return factor[:, None, None] * self.penalty(diff)

    def __call__(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Mean over graphs and components, scalar float64."""
        return self.errors(batch, pred).mean()


@dataclass(frozen=True)
class LossParts:
    """Per-term sums of weighted penalties and element counts of one or more batches.

    Attributes:
        sums: term name -> sum of weighted penalties.
        counts: term name -> number of elements.
    """

    sums: dict[str, float]
    counts: dict[str, int]

    def __add__(self, other: "LossParts") -> "LossParts":
        names = set(self.sums) | set(other.sums)
        return LossParts(
            {n: self.sums.get(n, 0.0) + other.sums.get(n, 0.0) for n in names},
            {n: self.counts.get(n, 0) + other.counts.get(n, 0) for n in names},
        )

    def means(self) -> dict[str, float]:
        """Per-term mean penalty."""
        return {n: self.sums[n] / max(self.counts[n], 1) for n in self.sums}


class WeightedLoss:
    """Weighted sum of loss terms: ``sum_k weight_k * mean(term_k)``.

    Terms with weight zero are skipped, so their predictions are not needed (no stress is
    computed when ``stress_weight`` is zero).

    Args:
        terms: sequence of ``(weight, term)`` pairs; term names must be distinct.
    """

    def __init__(self, terms: list[tuple[float, object]]):
        names = [term.name for _, term in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate loss terms: {names}")
        self.terms = [(float(w), term) for w, term in terms if w != 0.0]

    @property
    def weights(self) -> dict[str, float]:
        """Term name -> weight (non-zero terms only)."""
        return {term.name: w for w, term in self.terms}

    @property
    def needs_stress(self) -> bool:
        """Whether a stress prediction is needed."""
        return StressLoss.name in self.weights

    def __call__(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> Tensor:
        """Scalar float64 loss of one batch (differentiable)."""
        total = torch.zeros((), dtype=torch.float64, device=batch[keys.PTR].device)
        for weight, term in self.terms:
            total = total + weight * term(batch, pred)
        return total

    @property
    def names(self) -> tuple[str, ...]:
        """Term names, in the order of ``term_sums``."""
        return tuple(term.name for _, term in self.terms)

    def term_sums(
        self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]
    ) -> tuple[Tensor, tuple[int, ...]]:
        """Per-term sums of weighted penalties and element counts of one batch.

        Returns:
            ``(sums, counts)``: sums (n_terms,) float64 (differentiable, on the batch's
            device), counts per term (host integers: no device synchronisation).
        """
        device = batch[keys.PTR].device
        sums, counts = [], []
        for _, term in self.terms:
            errors = term.errors(batch, pred)
            sums.append(errors.sum())
            counts.append(int(errors.numel()))
        if not sums:
            return torch.zeros(0, dtype=torch.float64, device=device), ()
        return torch.stack(sums), tuple(counts)

    def from_sums(self, sums: Tensor, counts: Sequence[float]) -> Tensor:
        """``sum_k w_k sums_k / counts_k``: the loss when ``counts`` are the batch's own
        (equal to ``__call__``), a rank's share of it when they are the global batch's."""
        total = torch.zeros((), dtype=torch.float64, device=sums.device)
        for k, (weight, _) in enumerate(self.terms):
            total = total + weight * sums[k] / max(float(counts[k]), 1.0)
        return total

    def parts(self, batch: Mapping[str, Tensor], pred: Mapping[str, Tensor]) -> LossParts:
        """Detached per-term sums and counts of one batch, for accumulation."""
        sums, counts = self.term_sums(batch, pred)
        values = sums.detach().tolist()
        return LossParts(
            dict(zip(self.names, values, strict=True)),
            dict(zip(self.names, counts, strict=True)),
        )

    def combine(self, parts: LossParts) -> float:
        """Loss value of accumulated ``parts`` (equals ``__call__`` for a single batch)."""
        means = parts.means()
        return sum(w * means[name] for name, w in self.weights.items())


class LossSums:
    """``LossParts`` accumulated over batches on the device, read once at the end.

    Adding a batch is a tensor addition (no host synchronisation per step, which on a GPU
    would stall the queue of kernels); ``parts`` converts once.

    Args:
        loss_fn: the loss whose ``term_sums`` are added.
    """

    def __init__(self, loss_fn: WeightedLoss):
        self.names = loss_fn.names
        self._sums: Tensor | None = None
        self._counts = [0] * len(self.names)

    def add(self, sums: Tensor, counts: Sequence[int]) -> None:
        """Add one batch's ``term_sums`` (``sums`` is detached here)."""
        sums = sums.detach()
        self._sums = sums.clone() if self._sums is None else self._sums + sums
        self._counts = [a + int(b) for a, b in zip(self._counts, counts, strict=True)]

    def parts(self) -> LossParts:
        """The accumulated sums and counts (zeros when nothing was added)."""
        values = [0.0] * len(self.names) if self._sums is None else self._sums.tolist()
        return LossParts(
            dict(zip(self.names, values, strict=True)),
            dict(zip(self.names, self._counts, strict=True)),
        )


def energy_forces_stress_loss(
    energy_weight: float, forces_weight: float, stress_weight: float, penalty: Penalty = squared
) -> WeightedLoss:
    """The standard loss: energy-per-atom, force and stress terms with these weights, each
    the mean ``penalty`` (the MSE's by default) of its errors."""
    return WeightedLoss(
        [
            (energy_weight, EnergyPerAtomLoss(penalty)),
            (forces_weight, ForcesLoss(penalty)),
            (stress_weight, StressLoss(penalty)),
        ]
    )
