"""Error metrics accumulated over batches, and the per-epoch ``metrics.csv`` file.

Errors are unweighted and cover labelled entries only (``has_*`` masks): energy per atom in
meV/atom, force components in meV/Å, stress components (all nine) in meV/Å^3. A frame without
forces adds nothing to the force errors (neither to the sum nor to the count), so an RMSE is
never diluted by masked zeros. With several training files (``groups``), errors are also
accumulated per file (``dataset_index`` of each graph) into ``{prefix}_{file}_{...}`` columns,
which ``metrics.csv`` appends after its fixed ``CSV_COLUMNS``.
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


_STATS = 3  # per quantity: sum of |error|, sum of error^2, count


def _metrics(sums: Sequence[float], prefix: str) -> dict[str, float]:
    """RMSE and MAE per quantity from ``[abs, squared, count]`` per quantity (9 numbers)."""
    out = {}
    for k, q in enumerate(QUANTITIES):
        abs_sum, sq_sum, n = sums[_STATS * k : _STATS * (k + 1)]
        out[f"{prefix}_{q}_rmse"] = math.sqrt(sq_sum / n) if n else math.nan
        out[f"{prefix}_{q}_mae"] = abs_sum / n if n else math.nan
    return out


def _masked_sums(errors: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``[abs, squared, count]`` of the entries each mask selects.

    Args:
        errors: (n_items, n_components) errors, meV units.
        masks: (n_sets, n_items) bool: the items each set counts.

    Returns:
        (n_sets, 3) float64 (counts are items x components).
    """
    items = torch.stack([errors.abs().sum(dim=1), errors.square().sum(dim=1)])  # (2, n_items)
    zero = torch.zeros((), dtype=errors.dtype, device=errors.device)
    picked = torch.where(masks[:, None, :], items[None], zero).sum(dim=2)  # (n_sets, 2)
    count = masks.sum(dim=1, dtype=torch.float64)[:, None] * errors.shape[1]
    return torch.cat([picked, count], dim=1)


class ErrorAccumulator:
    """Running sums of absolute and squared errors of energy/atom, forces and stress.

    The sums stay on the batches' device as one tensor: adding a batch synchronises nothing
    with the host (masks select by ``torch.where``, not by boolean indexing); ``totals`` and
    ``metrics`` read them once.

    Args:
        groups: names of the training files, indexed by the batches' ``dataset_index``;
            when given (and the batches carry ``dataset_index``), errors are also summed per
            file.
    """

    def __init__(self, groups: Sequence[str] = ()):
        self.groups = tuple(groups)
        # (1 + n_groups, quantities, [abs, squared, count]) float64; None before any batch
        self._sums: torch.Tensor | None = None

    @torch.no_grad()
    def add(self, batch: Mapping[str, torch.Tensor], pred: Mapping[str, torch.Tensor]) -> None:
        """Accumulate the errors of one batch.

        Args:
            batch: batch dict with labels, ``ptr``, ``batch`` and ``has_*`` masks (and
                ``dataset_index`` (n_graphs,) for per-file errors).
            pred: model output with ``energy`` (n_graphs,), ``forces`` (n_atoms, 3) and,
                optionally ``stress`` (n_graphs, 3, 3); float64. Stress errors are counted
                only when predicted.
        """
        n_atoms = (batch[keys.PTR][1:] - batch[keys.PTR][:-1]).to(torch.float64)
        milli = _MILLI
        energy_err = (pred[keys.ENERGY] - batch[keys.ENERGY]).to(torch.float64) / n_atoms
        force_err = (pred[keys.FORCES] - batch[keys.FORCES]).to(torch.float64)
        graphs = torch.ones_like(batch[keys.HAS_ENERGY])[None]  # (n_sets, n_graphs)
        if self.groups and keys.DATASET_INDEX in batch:
            index = batch[keys.DATASET_INDEX]
            per_file = torch.arange(len(self.groups), device=index.device)[:, None] == index
            graphs = torch.cat([graphs, per_file])
        n_sets = 1 + len(self.groups)
        rows = [
            _masked_sums(energy_err[:, None] * milli, graphs & batch[keys.HAS_ENERGY]),
            _masked_sums(
                force_err * milli, (graphs & batch[keys.HAS_FORCES])[:, batch[keys.BATCH]]
            ),
        ]
        if keys.STRESS in pred:
            stress_err = (pred[keys.STRESS] - batch[keys.STRESS]).to(torch.float64)
            stress_err = stress_err.reshape(len(n_atoms), -1) * milli
            rows.append(_masked_sums(stress_err, graphs & batch[keys.HAS_STRESS]))
        else:
            rows.append(torch.zeros_like(rows[0]))
        sums = torch.stack(rows, dim=1)  # (sets in this batch, quantities, 3)
        if sums.shape[0] < n_sets:  # no dataset_index in the batch: the files get nothing
            sums = torch.cat([sums, sums.new_zeros(n_sets - sums.shape[0], *sums.shape[1:])])
        self._sums = sums if self._sums is None else self._sums + sums

    def totals(self) -> torch.Tensor:
        """All sums and counts as one (9 * (1 + n_groups),) float64 tensor (for a reduction
        over ranks): the totals, then each group's, ``[abs, squared, count]`` per quantity."""
        if self._sums is None:
            size = _STATS * len(QUANTITIES) * (1 + len(self.groups))
            return torch.zeros(size, dtype=torch.float64)
        return self._sums.reshape(-1).clone()

    @classmethod
    def from_totals(cls, totals: torch.Tensor, groups: Sequence[str] = ()) -> "ErrorAccumulator":
        """An accumulator holding ``totals`` (``totals()`` output, e.g. summed over ranks).

        Raises:
            ValueError: ``totals`` does not have 9 numbers for the total and each of ``groups``.
        """
        values = totals.detach().to("cpu", torch.float64).reshape(-1)
        size = _STATS * len(QUANTITIES)
        if values.numel() != size * (1 + len(groups)):
            raise ValueError(
                f"{values.numel()} totals for {len(groups)} groups; expected "
                f"{size * (1 + len(groups))} (pass the groups of the accumulator that made them)"
            )
        out = cls(groups)
        out._sums = values.reshape(1 + len(groups), len(QUANTITIES), _STATS).clone()
        return out

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}_{quantity}_{rmse|mae}`` in meV units; NaN where nothing was labelled.

        With ``groups``, also ``{prefix}_{group}_{quantity}_{rmse|mae}`` per file.
        """
        sets = self.totals().tolist()
        size = _STATS * len(QUANTITIES)
        out = _metrics(sets[:size], prefix)
        for k, name in enumerate(self.groups, start=1):
            out.update(_metrics(sets[k * size : (k + 1) * size], f"{prefix}_{name}"))
        return out


def group_summary(row: Mapping[str, object], prefix: str, groups: Sequence[str]) -> str:
    """One line of per-file RMSEs of a metrics row, e.g. for the log.

    Args:
        row: a metrics row with ``{prefix}_{group}_{quantity}_rmse`` entries.
        prefix: ``"valid"`` or ``"train"``.
        groups: the file names.

    Returns:
        ``"name: E 1.2 meV/atom, F 34.5 meV/Å, S nan meV/Å^3; ..."``.
    """
    units = {"energy": ("E", "meV/atom"), "forces": ("F", "meV/Å"), "stress": ("S", "meV/Å^3")}
    parts = []
    for name in groups:
        values = [
            f"{letter} {float(row.get(f'{prefix}_{name}_{q}_rmse', math.nan)):.3f} {unit}"
            for q, (letter, unit) in units.items()
        ]
        parts.append(f"{name}: " + ", ".join(values))
    return "; ".join(parts)


def _columns(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """``CSV_COLUMNS``, then any other key of ``rows`` (per-file metrics) in first-seen order."""
    extra: dict[str, None] = {}
    for row in rows:
        extra.update((name, None) for name in row if name not in CSV_COLUMNS)
    return [*CSV_COLUMNS, *extra]


def _csv_text(rows: Sequence[Mapping[str, object]], columns: Sequence[str], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name, math.nan) for name in columns})
    return buffer.getvalue()


class MetricsCSV:
    """``metrics.csv``: one row per epoch, appended and flushed as epochs finish.

    Columns are ``CSV_COLUMNS`` followed by any other key the rows carry (per-file metrics);
    a row with a new key rewrites the file atomically with the wider header.

    Args:
        path: the CSV file.
        history: rows already recorded (from a checkpoint); the file is rewritten
            atomically with exactly these rows, so rows written after the checkpoint by an
            interrupted run disappear.
    """

    def __init__(self, path: str | os.PathLike, history: Sequence[Mapping[str, object]] = ()):
        self.path = Path(path)
        self._rows = [dict(row) for row in history]
        self._columns = _columns(self._rows)
        atomic_write_text(_csv_text(self._rows, self._columns, header=True), self.path)

    def append(self, row: Mapping[str, object]) -> None:
        """Append one epoch's row (keys ``CSV_COLUMNS`` and more) and flush it to disk."""
        self._rows.append(dict(row))
        if any(name not in self._columns for name in row):
            self._columns = _columns(self._rows)
            atomic_write_text(_csv_text(self._rows, self._columns, header=True), self.path)
            return
        with open(self.path, "a") as handle:
            handle.write(_csv_text([row], self._columns, header=False))
            handle.flush()
            os.fsync(handle.fileno())


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float | str]]:
    """Rows of a ``metrics.csv`` with numbers parsed (``stage`` stays a string)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (v if k == "stage" else float(v)) for k, v in row.items()} for row in rows]
