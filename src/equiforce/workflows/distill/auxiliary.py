"""Feature- and Hessian-matching terms of the student's loss.

They enter training through the trainer's auxiliary-loss hook
(``equiforce.train.trainer.Trainer(auxiliary=...)``) in ``WeightedLoss``'s form: per term the
sum of squared errors and its element count (``term_sums``), divided by the counts over the
global batch (``from_sums``), so a student trained on several ranks takes the steps of one.

Targets are precomputed per teacher-labelled structure and looked up by a hash of the exact
atomic numbers and positions of each graph in the batch (``geometry_key``): the positions of
a batch are the float64 values read from the student's training file, so the table is built
from that same file. Graphs without targets (ground-truth copies of structures that also have
teacher copies share their geometry and hence their targets) contribute nothing.

* feature matching (Kelvinius et al. 2023): ``W f_s + b`` against the teacher's per-atom
  invariant features standardised per component, where ``f_s`` are the student's
  ``node_features`` and ``W, b`` a learned linear map; MSE over atoms and components.
* Hessian matching (Amin et al. 2025): the student's Hessian-vector products (double
  backward, differentiable) against the teacher's for fixed random unit vectors; MSE over
  atoms, components and vectors, (eV/Å^2)^2.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import torch
from torch import nn

from equiforce.data import keys
from equiforce.models.hessian import hessian_vector_product
from equiforce.models.potential import NODE_FEATURES, Potential

Targets = Mapping[str, Mapping[str, np.ndarray]]


def geometry_key(atomic_numbers: np.ndarray, positions: np.ndarray) -> str:
    """SHA-256 (hex) of exact int64 atomic numbers and float64 positions."""
    digest = hashlib.sha256(np.ascontiguousarray(atomic_numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    return digest.hexdigest()


class DistillationLoss(nn.Module):
    """``feature_weight * feature MSE + hessian_weight * HVP MSE`` of a batch.

    Each MSE is over the batch's graphs that have targets: the squared errors' sum over their
    elements (atoms x components, or vectors x atoms x 3) divided by the number of elements.

    Args:
        targets: geometry key -> record with ``features`` (n_atoms, F_t) (when
            ``feature_weight > 0``) and ``vectors``, ``hvp`` (n_atoms, n_vectors, 3) (when
            ``hessian_weight > 0``).
        feature_weight: weight of the feature term.
        hessian_weight: weight of the Hessian term, (eV/Å^2)^-2.
        n_student_features: width F_s of the student's ``node_features`` (feature term).
        seed: seeds the initial linear map.

    Attributes:
        terms: the terms' names, in the order of ``term_sums``.
        extra_outputs: the model outputs the loss reads from ``pred`` besides energy and
            forces (``node_features`` for the feature term), which the training step asks
            the model for.

    Raises:
        ValueError: ``feature_weight > 0`` but no target has teacher features.
    """

    def __init__(
        self,
        targets: Targets,
        feature_weight: float,
        hessian_weight: float,
        n_student_features: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.targets = dict(targets)
        self.feature_weight = float(feature_weight)
        self.hessian_weight = float(hessian_weight)
        self.feature_map = None
        self.terms = ("features", "hessian")
        self.extra_outputs = frozenset({NODE_FEATURES} if self.feature_weight > 0 else ())
        if self.feature_weight > 0:
            features = [r["features"] for r in self.targets.values() if "features" in r]
            if not features:
                raise ValueError("feature matching needs teacher features for some structure")
            stacked = np.concatenate(features)
            self.register_buffer(
                "feature_mean", torch.as_tensor(stacked.mean(0), dtype=torch.float64)
            )
            std = np.maximum(stacked.std(0), 1e-8)
            self.register_buffer("feature_std", torch.as_tensor(std, dtype=torch.float64))
            generator = torch.Generator().manual_seed(seed)
            self.feature_map = nn.Linear(n_student_features, stacked.shape[1], dtype=torch.float64)
            nn.init.normal_(
                self.feature_map.weight, 0.0, n_student_features**-0.5, generator=generator
            )
            nn.init.zeros_(self.feature_map.bias)

    def _lookup(self, batch: Mapping[str, torch.Tensor]) -> list[tuple[int, int, Mapping]]:
        """(first atom, last atom + 1, record) of every graph of the batch that has targets."""
        ptr = batch[keys.PTR].tolist()
        numbers = batch[keys.ATOMIC_NUMBERS].detach().cpu().numpy()
        pos = batch[keys.POSITIONS].detach().cpu().to(torch.float64).numpy()
        found = []
        for start, stop in zip(ptr[:-1], ptr[1:], strict=True):
            record = self.targets.get(geometry_key(numbers[start:stop], pos[start:stop]))
            if record is not None:
                found.append((start, stop, record))
        return found

    def feature_sum(self, pred: Mapping[str, torch.Tensor], found) -> tuple[torch.Tensor, int]:
        """Sum of the mapped student features' squared errors (scalar float64) and its
        element count."""
        rows = torch.cat([torch.arange(a, b) for a, b, _ in found]).to(pred[NODE_FEATURES].device)
        student = self.feature_map(pred[NODE_FEATURES][rows].to(torch.float64))
        teacher = np.concatenate([r["features"] for _, _, r in found])
        teacher = torch.as_tensor(teacher, dtype=torch.float64, device=student.device)
        errors = (student - (teacher - self.feature_mean) / self.feature_std) ** 2
        return errors.sum(), errors.numel()

    def hessian_sum(self, model: Potential, batch, found) -> tuple[torch.Tensor, int]:
        """Sum of the student's Hessian-vector products' squared errors (scalar float64) and
        its element count."""
        pos = batch[keys.POSITIONS]
        n_vectors = found[0][2]["vectors"].shape[1]
        vectors = torch.zeros(n_vectors, pos.shape[0], 3, dtype=torch.float64, device=pos.device)
        target = torch.zeros_like(vectors)
        mask = torch.zeros(pos.shape[0], dtype=torch.bool, device=pos.device)
        for a, b, record in found:
            vectors[:, a:b] = torch.as_tensor(record["vectors"]).transpose(0, 1)
            target[:, a:b] = torch.as_tensor(record["hvp"]).transpose(0, 1)
            mask[a:b] = True
        student = hessian_vector_product(model, batch, vectors, create_graph=True)
        errors = (student - target)[:, mask] ** 2
        return errors.sum(), errors.numel()

    def term_sums(
        self, model: Potential, batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Per term (``terms``), the squared errors' sum over this batch and their count.

        Returns:
            ``sums`` (2,) float64 (differentiable) and the element counts (0 for a term
            without weight or without targets in the batch).
        """
        zero = torch.zeros((), dtype=torch.float64, device=batch[keys.PTR].device)
        sums, counts = [zero, zero], [0, 0]
        found = self._lookup(batch)
        with_features = [f for f in found if "features" in f[2]]
        with_hvp = [f for f in found if "hvp" in f[2]]
        if self.feature_weight > 0 and with_features:
            sums[0], counts[0] = self.feature_sum(pred, with_features)
        if self.hessian_weight > 0 and with_hvp:
            sums[1], counts[1] = self.hessian_sum(model, batch, with_hvp)
        return torch.stack(sums), (counts[0], counts[1])

    def from_sums(self, sums: torch.Tensor, totals) -> torch.Tensor:
        """``sum_k w_k S_k / N_k`` over the terms with ``N_k > 0``, scalar float64.

        Args:
            sums: ``term_sums``'s sums (of this batch, or of this rank's share).
            totals: the element counts of the batch (or of the global batch over ranks).
        """
        loss = torch.zeros((), dtype=torch.float64, device=sums.device)
        for k, weight in enumerate((self.feature_weight, self.hessian_weight)):
            if weight > 0 and totals[k] > 0:
                loss = loss + weight * sums[k] / totals[k]
        return loss

    def forward(
        self, model: Potential, batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The weighted auxiliary loss of one batch, scalar float64 (0 without targets)."""
        return self.from_sums(*self.term_sums(model, batch, pred))
