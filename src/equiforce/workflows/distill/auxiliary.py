"""Feature- and Hessian-matching terms of the student's loss.

They enter training through the trainer's auxiliary-loss hook
(``equiforce.train.trainer.Trainer(auxiliary=...)``).

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
from equiforce.models.potential import NODE_FEATURES, Potential
from equiforce.workflows.distill.hessian import hessian_vector_product

Targets = Mapping[str, Mapping[str, np.ndarray]]


def geometry_key(atomic_numbers: np.ndarray, positions: np.ndarray) -> str:
    """SHA-256 (hex) of exact int64 atomic numbers and float64 positions."""
    digest = hashlib.sha256(np.ascontiguousarray(atomic_numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    return digest.hexdigest()


class DistillationLoss(nn.Module):
    """``feature_weight * feature MSE + hessian_weight * HVP MSE`` of a batch.

    Args:
        targets: geometry key -> record with ``features`` (n_atoms, F_t) (when
            ``feature_weight > 0``) and ``vectors``, ``hvp`` (n_atoms, n_vectors, 3) (when
            ``hessian_weight > 0``).
        feature_weight: weight of the feature term.
        hessian_weight: weight of the Hessian term, (eV/Å^2)^-2.
        n_student_features: width F_s of the student's ``node_features`` (feature term).
        seed: seeds the initial linear map.

    Attributes:
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

    def feature_loss(self, pred: Mapping[str, torch.Tensor], found) -> torch.Tensor:
        """Mean squared error of the mapped student features, scalar float64."""
        rows = torch.cat([torch.arange(a, b) for a, b, _ in found]).to(pred[NODE_FEATURES].device)
        student = self.feature_map(pred[NODE_FEATURES][rows].to(torch.float64))
        teacher = np.concatenate([r["features"] for _, _, r in found])
        teacher = torch.as_tensor(teacher, dtype=torch.float64, device=student.device)
        return ((student - (teacher - self.feature_mean) / self.feature_std) ** 2).mean()

    def hessian_loss(self, model: Potential, batch, found) -> torch.Tensor:
        """Mean squared error of the student's Hessian-vector products, scalar float64."""
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
        return ((student - target)[:, mask] ** 2).mean()

    def forward(
        self, model: Potential, batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The weighted auxiliary loss of one batch, scalar float64 (0 without targets)."""
        total = torch.zeros((), dtype=torch.float64, device=batch[keys.PTR].device)
        found = self._lookup(batch)
        with_features = [f for f in found if "features" in f[2]]
        with_hvp = [f for f in found if "hvp" in f[2]]
        if self.feature_weight > 0 and with_features:
            total = total + self.feature_weight * self.feature_loss(pred, with_features)
        if self.hessian_weight > 0 and with_hvp:
            total = total + self.hessian_weight * self.hessian_loss(model, batch, with_hvp)
        return total
