"""Evaluation of a ``Potential`` on labelled structures: batched inference, errors, parity plots.

Errors are reported in milli-units: energy per structure in meV, energy per atom in meV/atom,
force components in meV/Å and stress components (all nine of the 3x3 tensor) in meV/Å^3.
Structures without a label for a quantity are left out of that quantity's statistics.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch

from equiforce.data import keys
from equiforce.data.batch import batch_to, collate
from equiforce.data.graph import Configuration, configuration_to_graph, type_indices
from equiforce.files import atomic_write_text
from equiforce.models.potential import Potential
from equiforce.precision import current_policy, precision_scope

# A structure to evaluate: a ``Configuration`` or a single-structure graph dict.
Structure = Union[Configuration, Mapping[str, torch.Tensor]]

_MILLI = 1000.0


@dataclass(frozen=True)
class Predictions:
    """Model outputs for a sequence of structures, float64 NumPy in eV and Å.

    Attributes:
        energy: (n_graphs,) total energies, eV.
        forces: (n_atoms_total, 3) forces of all structures, concatenated in order, eV/Å.
        n_atoms: (n_graphs,) atoms per structure; ``np.cumsum`` gives the slices of ``forces``.
        stress: (n_graphs, 3, 3) stress, eV/Å^3, ASE sign (zeros without a 3D cell), or None
            when not requested.
    """

    energy: np.ndarray
    forces: np.ndarray
    n_atoms: np.ndarray
    stress: np.ndarray | None


@dataclass(frozen=True)
class ErrorStats:
    """Mean absolute and root-mean-square error of one quantity.

    Attributes:
        mae: mean absolute error, in ``unit``.
        rmse: root-mean-square error, in ``unit``.
        count: number of compared values (structures, force or stress components).
        unit: e.g. ``"meV/atom"``.
    """

    mae: float
    rmse: float
    count: int
    unit: str

    @classmethod
    def from_errors(cls, errors: np.ndarray, unit: str) -> "ErrorStats":
        """Statistics of signed errors (any shape), already in ``unit``."""
        errors = np.asarray(errors, dtype=np.float64).ravel()
        return cls(
            mae=float(np.mean(np.abs(errors))),
            rmse=float(np.sqrt(np.mean(errors**2))),
            count=int(errors.size),
            unit=unit,
        )


@dataclass(frozen=True)
class ParityData:
    """Reference and predicted values of one quantity, for a parity plot.

    Attributes:
        reference: (n_values,) float64 reference values, in ``label``'s unit.
        predicted: (n_values,) float64 model values.
        label: axis label with unit, e.g. ``"energy per atom (eV/atom)"``.
    """

    reference: np.ndarray
    predicted: np.ndarray
    label: str


@dataclass(frozen=True)
class EvaluationResult:
    """Errors of a model on a set of structures.

    Attributes:
        n_configs: number of structures evaluated.
        n_atoms: total number of atoms.
        metrics: ``ErrorStats`` keyed by ``"energy"`` (meV), ``"energy_per_atom"``
            (meV/atom), ``"forces"`` (meV/Å) and ``"stress"`` (meV/Å^3); a key is absent when
            no structure carries that label.
        parity: ``ParityData`` keyed by ``"energy_per_atom"``, ``"forces"`` and ``"stress"``
            (values in eV/atom, eV/Å, eV/Å^3), with the same presence rule.
    """

    n_configs: int
    n_atoms: int
    metrics: dict[str, ErrorStats]
    parity: dict[str, ParityData]


class _Reference(NamedTuple):
    n_atoms: int
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None


def _to_graph(structure: Structure, model: Potential, index: int) -> Mapping[str, torch.Tensor]:
    if isinstance(structure, Configuration):
        return configuration_to_graph(structure, model.type_names, model.r_max)
    # A cached graph's atom_type indices are only meaningful in the type order it was built with.
    numbers = structure[keys.ATOMIC_NUMBERS].cpu().numpy()
    expected = type_indices(numbers, model.type_names, f"graph {index}")
    if not np.array_equal(expected, structure[keys.ATOM_TYPE].cpu().numpy()):
        raise ValueError(
            f"graph {index}: its atom_type indices follow a different type order than the "
            f"model's type_names {model.type_names}; rebuild the graphs for this model"
        )
    return structure


def _n_atoms(structure: Structure) -> int:
    if isinstance(structure, Configuration):
        return structure.n_atoms
    return int(structure[keys.POSITIONS].shape[0])


def _reference_of(structure: Structure) -> _Reference:
    if isinstance(structure, Configuration):
        return _Reference(structure.n_atoms, structure.energy, structure.forces, structure.stress)

    def label(name: str, flag: str) -> np.ndarray | None:
        if not bool(structure[flag].reshape(-1)[0]):
            return None
        return structure[name].detach().cpu().to(torch.float64).numpy()

    energy = label(keys.ENERGY, keys.HAS_ENERGY)
    stress = label(keys.STRESS, keys.HAS_STRESS)
    return _Reference(
        n_atoms=_n_atoms(structure),
        energy=None if energy is None else float(energy[0]),
        forces=label(keys.FORCES, keys.HAS_FORCES),
        stress=None if stress is None else stress.reshape(3, 3),
    )


def predict(
    model: Potential,
    structures: Sequence[Structure],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    compute_stress: bool = False,
) -> Predictions:
    """Batched inference without keeping the derivative graph.

    Args:
        model: the potential; evaluated in eval mode, its training flag is restored after,
            in the matmul precision of its policy (``equiforce.precision.precision_scope``).
        structures: ``Configuration`` objects (converted with the model's type names and
            cutoff) or single-structure graph dicts from ``configuration_to_graph``.
        batch_size: structures per forward pass.
        device: where to run; None keeps the model's device, otherwise the model is moved
            there (in place).
        compute_stress: also predict the stress.

    Returns:
        ``Predictions`` in float64, whatever the model dtype.

    Raises:
        ValueError: ``structures`` is empty, ``batch_size`` < 1, a structure has an element
            the model does not know, or a graph was built for another type order.
    """
    if len(structures) == 0:
        raise ValueError("predict needs at least one structure")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    wanted = [keys.ENERGY, keys.FORCES] + ([keys.STRESS] if compute_stress else [])
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    try:
        # forces are autograd derivatives, even under no_grad
        with torch.enable_grad(), precision_scope(current_policy(model)):
            for start in range(0, len(structures), batch_size):
                stop = min(start + batch_size, len(structures))
                graphs = [_to_graph(structures[k], model, k) for k in range(start, stop)]
                batch = batch_to(collate(graphs), device)
                out = model(
                    batch,
                    compute_forces=True,
                    compute_stress=compute_stress,
                    create_graph=False,
                )
                for name in wanted:
                    chunks[name].append(out[name].detach().to("cpu", torch.float64).numpy())
    finally:
        model.train(was_training)
    n_atoms = [_n_atoms(s) for s in structures]
    return Predictions(
        energy=np.concatenate(chunks[keys.ENERGY]),
        forces=np.concatenate(chunks[keys.FORCES]),
        n_atoms=np.asarray(n_atoms, dtype=np.int64),
        stress=np.concatenate(chunks[keys.STRESS]) if compute_stress else None,
    )


def evaluate(
    model: Potential,
    structures: Sequence[Structure],
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> EvaluationResult:
    """Compare model predictions with the labels of ``structures``.

    Args:
        model: the potential.
        structures: labelled ``Configuration`` objects or graph dicts (see ``predict``);
            stress is predicted only when at least one structure carries a stress label.
        batch_size: structures per forward pass.
        device: see ``predict``.

    Returns:
        ``EvaluationResult`` with errors in meV units and the parity data.
    """
    with_stress = any(_reference_of(s).stress is not None for s in structures)
    pred = predict(model, structures, batch_size, device, compute_stress=with_stress)
    return errors_of(structures, pred)


ALL_FILES = "all"  # key of ``evaluate_files``'s result over every file together


def evaluate_files(
    model: Potential,
    files: Mapping[str, Sequence[Structure]],
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> dict[str, EvaluationResult]:
    """Errors per file and over all files together, from one prediction pass.

    Args:
        model: the potential.
        files: file name -> its structures (see ``evaluate``); names other than ``"all"``.
        batch_size: structures per forward pass (batches may span files).
        device: see ``predict``.

    Returns:
        ``EvaluationResult`` per file name, in the order of ``files``, then ``"all"``.
    """
    if ALL_FILES in files:
        raise ValueError(f"{ALL_FILES!r} is reserved for the result over all files")
    structures = [s for group in files.values() for s in group]
    with_stress = any(_reference_of(s).stress is not None for s in structures)
    pred = predict(model, structures, batch_size, device, compute_stress=with_stress)
    results, graph, atom = {}, 0, 0
    for name, group in files.items():
        n_graphs = len(group)
        n_atoms = int(pred.n_atoms[graph : graph + n_graphs].sum())
        part = Predictions(
            energy=pred.energy[graph : graph + n_graphs],
            forces=pred.forces[atom : atom + n_atoms],
            n_atoms=pred.n_atoms[graph : graph + n_graphs],
            stress=None if pred.stress is None else pred.stress[graph : graph + n_graphs],
        )
        results[name] = errors_of(group, part)
        graph, atom = graph + n_graphs, atom + n_atoms
    results[ALL_FILES] = errors_of(structures, pred)
    return results


def errors_of(structures: Sequence[Structure], pred: Predictions) -> EvaluationResult:
    """Compare given predictions (``predict`` output for ``structures``) with the labels.

    Args:
        structures: the labelled structures, in the order of ``pred``.
        pred: predictions; stress errors need ``pred.stress``.

    Returns:
        ``EvaluationResult`` with errors in meV units and the parity data.
    """
    references = [_reference_of(s) for s in structures]
    if pred.stress is None:
        references = [r._replace(stress=None) for r in references]
    metrics: dict[str, ErrorStats] = {}
    parity: dict[str, ParityData] = {}
    _compare_energies(references, pred, metrics, parity)
    _compare_forces(references, pred, metrics, parity)
    _compare_stresses(references, pred, metrics, parity)
    return EvaluationResult(
        n_configs=len(structures),
        n_atoms=int(pred.n_atoms.sum()),
        metrics=metrics,
        parity=parity,
    )


def _compare_energies(
    references: Sequence[_Reference],
    pred: Predictions,
    metrics: dict[str, ErrorStats],
    parity: dict[str, ParityData],
) -> None:
    index = [k for k, r in enumerate(references) if r.energy is not None]
    if not index:
        return
    reference = np.array([references[k].energy for k in index])
    predicted = pred.energy[index]
    n_atoms = pred.n_atoms[index]
    metrics["energy"] = ErrorStats.from_errors(_MILLI * (predicted - reference), "meV")
    metrics["energy_per_atom"] = ErrorStats.from_errors(
        _MILLI * (predicted - reference) / n_atoms, "meV/atom"
    )
    parity["energy_per_atom"] = ParityData(
        reference / n_atoms, predicted / n_atoms, "energy per atom (eV/atom)"
    )


def _compare_forces(
    references: Sequence[_Reference],
    pred: Predictions,
    metrics: dict[str, ErrorStats],
    parity: dict[str, ParityData],
) -> None:
    index = [k for k, r in enumerate(references) if r.forces is not None]
    if not index:
        return
    offsets = np.concatenate([[0], np.cumsum(pred.n_atoms)])
    reference = np.concatenate([references[k].forces for k in index]).ravel()
    predicted = np.concatenate([pred.forces[offsets[k] : offsets[k + 1]] for k in index]).ravel()
    metrics["forces"] = ErrorStats.from_errors(_MILLI * (predicted - reference), "meV/Å")
    parity["forces"] = ParityData(reference, predicted, "force component (eV/Å)")


def _compare_stresses(
    references: Sequence[_Reference],
    pred: Predictions,
    metrics: dict[str, ErrorStats],
    parity: dict[str, ParityData],
) -> None:
    index = [k for k, r in enumerate(references) if r.stress is not None]
    if not index:
        return
    reference = np.stack([references[k].stress for k in index]).ravel()
    predicted = pred.stress[index].ravel()
    metrics["stress"] = ErrorStats.from_errors(_MILLI * (predicted - reference), "meV/Å^3")
    parity["stress"] = ParityData(reference, predicted, "stress component (eV/Å^3)")


_TABLE_ORDER = ("energy_per_atom", "energy", "forces", "stress")


def format_table(result: EvaluationResult) -> str:
    """A fixed-width table of MAE/RMSE/count per quantity, for the screen."""
    lines = [
        f"{result.n_configs} structures, {result.n_atoms} atoms",
        f"{'quantity':<16}{'unit':<10}{'MAE':>12}{'RMSE':>12}{'count':>10}",
    ]
    for name in _TABLE_ORDER:
        if name in result.metrics:
            m = result.metrics[name]
            lines.append(f"{name:<16}{m.unit:<10}{m.mae:>12.4f}{m.rmse:>12.4f}{m.count:>10d}")
    return "\n".join(lines)


def _payload(result: EvaluationResult) -> dict:
    return {
        "n_configs": result.n_configs,
        "n_atoms": result.n_atoms,
        "metrics": {
            name: {"mae": m.mae, "rmse": m.rmse, "count": m.count, "unit": m.unit}
            for name, m in result.metrics.items()
        },
    }


def to_json(
    result: EvaluationResult | Mapping[str, EvaluationResult],
    path: str | os.PathLike | None = None,
) -> str:
    """Counts and metrics as JSON text, also written atomically to ``path`` when given.

    Args:
        result: one result, or ``evaluate_files``'s results (then ``{"files": {name: ...}}``).
        path: where to write, or None.
    """
    if isinstance(result, EvaluationResult):
        payload = _payload(result)
    else:
        payload = {"files": {name: _payload(r) for name, r in result.items()}}
    text = json.dumps(payload, indent=2) + "\n"
    if path is not None:
        atomic_write_text(text, path)
    return text


def plot_parity(result: EvaluationResult, directory: str | os.PathLike) -> list[Path]:
    """Write one parity plot (PNG) per quantity: predicted vs reference, y = x line, RMSE.

    Args:
        result: output of ``evaluate``.
        directory: created if missing; files are named ``parity_<quantity>.png``.

    Returns:
        Paths of the written files.
    """
    # The Agg canvas is used directly, so no pyplot backend or global figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in result.parity.items():
        stats = result.metrics[name]
        fig = Figure(figsize=(4.5, 4.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter(data.reference, data.predicted, s=4, alpha=0.6, linewidths=0)
        low = float(min(data.reference.min(), data.predicted.min()))
        high = float(max(data.reference.max(), data.predicted.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
        ax.set_xlabel(f"reference {data.label}")
        ax.set_ylabel(f"predicted {data.label}")
        ax.set_title(f"{name}: RMSE = {stats.rmse:.3g} {stats.unit}")
        ax.legend(loc="upper left")
        fig.tight_layout()
        path = directory / f"parity_{name}.png"
        fig.savefig(path)
        written.append(path)
    return written
