"""Error metrics accumulated over batches, and the per-epoch ``metrics.csv`` file.

Errors are unweighted and cover labelled entries only (``has_*`` masks): energy per atom in
meV/atom, force components in meV/Å, stress components (all nine) in meV/Å^3.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from equiforce.data import keys
from equiforce.files import atomic_write_text

_MILLI = 1000.0
QUANTITIES = ("energy", "forces", "stress")  # energy means energy per atom

# Columns of metrics.csv, in order: epoch (1-based), stage ("main"/"stage_two"), lr of the
# epoch, losses, train_/valid_ RMSE and MAE in meV units (train_ ones are accumulated over
# the epoch's steps with the raw weights, valid_ ones use the evaluated/EMA weights), and
# wall_s: training-loop seconds since the run began, summed over resumed invocations.
CSV_COLUMNS = (
    "epoch",
    "stage",
    "lr",
    "train_loss",
    "valid_loss",
    *(
        f"{split}_{q}_{stat}"
        for split in ("train", "valid")
        for q in QUANTITIES
        for stat in ("rmse", "mae")
    ),
    "skipped_steps",  # optimizer steps skipped for inf/NaN gradients (fp16 loss scaling)
    "loss_scale",  # fp16 loss scale at the end of the epoch; nan without loss scaling
    "wall_s",
)


class ErrorAccumulator:
    """Running sums of absolute and squared errors of energy/atom, forces and stress."""

    def __init__(self):
        self._abs = {q: 0.0 for q in QUANTITIES}
        self._sq = {q: 0.0 for q in QUANTITIES}
        self._count = {q: 0 for q in QUANTITIES}

    @torch.no_grad()
    def add(self, batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor]) -> None:
        """Accumulate the errors of one batch.

        Args:
            batch: batch dict with labels, ``ptr``, ``batch`` and ``has_*`` masks.
            pred: model output with ``energy`` (n_graphs,), ``forces`` (n_atoms, 3) and,
                optionally ``stress`` (n_graphs, 3, 3); float64. Stress errors are counted
                only when predicted.
        """
        n_atoms = (batch[keys.PTR][1:] - batch[keys.PTR][:-1]).to(torch.float64)
        energy_err = (pred[keys.ENERGY] - batch[keys.ENERGY]).detach() / n_atoms
        self._add("energy", energy_err[batch[keys.HAS_ENERGY]])
        atom_mask = batch[keys.HAS_FORCES][batch[keys.BATCH]]
        self._add("forces", (pred[keys.FORCES] - batch[keys.FORCES]).detach()[atom_mask])
        stress_mask = batch[keys.HAS_STRESS]
        if keys.STRESS in pred and bool(stress_mask.any()):
            self._add("stress", (pred[keys.STRESS] - batch[keys.STRESS]).detach()[stress_mask])

    def _add(self, quantity: str, errors: torch.Tensor) -> None:
        errors = errors.to(torch.float64) * _MILLI
        self._abs[quantity] += float(errors.abs().sum())
        self._sq[quantity] += float(errors.square().sum())
        self._count[quantity] += int(errors.numel())

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}_{quantity}_{rmse|mae}`` in meV units; NaN where nothing was labelled."""
        out = {}
        for q in QUANTITIES:
            n = self._count[q]
            out[f"{prefix}_{q}_rmse"] = math.sqrt(self._sq[q] / n) if n else math.nan
            out[f"{prefix}_{q}_mae"] = self._abs[q] / n if n else math.nan
        return out


def _csv_text(rows: Sequence[Mapping[str, object]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name, math.nan) for name in CSV_COLUMNS})
    return buffer.getvalue()


class MetricsCSV:
    """``metrics.csv``: one row per epoch, appended and flushed as epochs finish.

    Args:
        path: the CSV file.
        history: rows already recorded (from a checkpoint); the file is rewritten
            atomically with exactly these rows, so rows written after the checkpoint by an
            interrupted run disappear.
    """

    def __init__(self, path: str | os.PathLike, history: Sequence[Mapping[str, object]] = ()):
        self.path = Path(path)
        atomic_write_text(_csv_text(history, header=True), self.path)

    def append(self, row: Mapping[str, object]) -> None:
        """Append one epoch's row (keys ``CSV_COLUMNS``) and flush it to disk."""
        with open(self.path, "a") as handle:
            handle.write(_csv_text([row], header=False))
            handle.flush()
            os.fsync(handle.fileno())


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float | str]]:
    """Rows of a ``metrics.csv`` with numbers parsed (``stage`` stays a string)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (v if k == "stage" else float(v)) for k, v in row.items()} for row in rows]
