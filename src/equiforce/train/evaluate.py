"""Evaluation of a ``Potential`` on labelled structures: batched inference, errors, parity plots.

Errors are reported in milli-units: energy per structure in meV, energy per atom in meV/atom,
force components in meV/Å and stress components (all nine of the 3x3 tensor) in meV/Å^3.
Structures without a label for a quantity are left out of that quantity's statistics.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch

from equiforce.data import keys
from equiforce.data.batch import batch_to, collate
from equiforce.data.extxyz import KeySpec
from equiforce.data.graph import Configuration, configuration_to_graph, type_indices
from equiforce.data.ondisk import (
    OnDiskDataset,
    check_label_keys,
    chunked,
    is_preprocessed,
    iter_configurations,
)
from equiforce.export.package import ExportedPotential
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
        node_energy: (n_atoms_total,) each atom's energy, eV (the model's decomposition: they
            sum to ``energy``), or None (a package exported without per-atom outputs).
    """

    energy: np.ndarray
    forces: np.ndarray
    n_atoms: np.ndarray
    stress: np.ndarray | None
    node_energy: np.ndarray | None = None


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


@dataclass(frozen=True)
class ParityData:
    """Reference and predicted values of one quantity, for a parity plot.

    Attributes:
        reference: (n_values,) float64 reference values, in ``label``'s unit; every value, or
            a uniform random sample of ``max_parity_points`` of them (in their order).
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
        forces_by_species: the force components' ``ErrorStats`` (meV/Å) of the atoms of each
            element, keyed by its symbol (empty where the species were not known).
        by_config_type: the errors of the structures of each config type (``Configuration.
            config_type``, e.g. ``"bulk"``; ``"Default"`` for a frame without one), keyed by
            it, without parity data; empty where the types are not known (a directory
            preprocessed before equiforce kept them).
        by_state: the same for each electronic state (total charge and spin multiplicity,
            keyed ``"charge -1, multiplicity 2"``; a frame without them is a neutral
            singlet).
    """

    n_configs: int
    n_atoms: int
    metrics: dict[str, ErrorStats]
    parity: dict[str, ParityData]
    forces_by_species: dict[str, ErrorStats] = field(default_factory=dict)
    by_config_type: dict[str, EvaluationResult] = field(default_factory=dict)
    by_state: dict[str, EvaluationResult] = field(default_factory=dict)


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


def _symbols(structure: Structure, type_names: Sequence[str]) -> np.ndarray:
    """(n_atoms,) the element symbol of each atom (a graph's from the model's ``type_names``)."""
    if isinstance(structure, Configuration):
        from ase.data import chemical_symbols

        return np.array([chemical_symbols[z] for z in structure.atomic_numbers])
    return np.asarray(type_names)[structure[keys.ATOM_TYPE].cpu().numpy()]


class TypedGraph(dict):
    """A graph dict of a preprocessed directory that knows its structure's config type
    (``structures_in``; None where the directory kept none)."""

    def __init__(self, graph: dict[str, torch.Tensor], config_type: str | None):
        super().__init__(graph)
        self.config_type = config_type


def _config_type(structure: Structure) -> str | None:
    """A structure's config type (None for a graph that does not know it)."""
    return getattr(structure, "config_type", None)


def _state(structure: Structure) -> str:
    """A structure's electronic state, ``"charge Q, multiplicity M"``."""
    if isinstance(structure, Configuration):
        charge, spin = structure.total_charge, structure.total_spin
    else:
        charge, spin = (
            float(structure[name].reshape(-1)[0]) if name in structure else default
            for name, default in keys.GRAPH_STATE_DEFAULTS.items()
        )
    return f"charge {charge:g}, multiplicity {spin:g}"


# the groups ErrorTally also tallies apart: name -> the group of a structure (None: unknown)
_GROUPINGS = {"config_type": _config_type, "state": _state}


def _subset(pred: Predictions, indices: Sequence[int]) -> Predictions:
    """The predictions of the structures at ``indices`` (in that order)."""
    offsets = np.concatenate([[0], np.cumsum(pred.n_atoms)])
    atoms = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in indices])
    return Predictions(
        energy=pred.energy[indices],
        forces=pred.forces[atoms],
        n_atoms=pred.n_atoms[indices],
        stress=None if pred.stress is None else pred.stress[indices],
        node_energy=None if pred.node_energy is None else pred.node_energy[atoms],
    )


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


def structures_in(path: str | os.PathLike, model: Potential, label_keys: KeySpec) -> Iterator:
    """The structures of a labelled data set, streamed (for ``evaluate``/``evaluate_files``):
    an extxyz file's configurations one frame at a time (frames without labels included,
    left out of the errors), or a preprocessed directory's graphs in ``model``'s species
    order, each with its config type (``TypedGraph``).

    Raises:
        FileNotFoundError: no such file or directory.
        ValueError: a directory preprocessed with another cutoff, other label keys or
            another config type key, without the states a charge-aware model reads, or
            holding a species the model lacks (the directory named).
    """

    if not is_preprocessed(path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return iter_configurations(path, label_keys, require_label=False)
    dataset = OnDiskDataset(path, model.type_names)
    if dataset.r_max != float(model.r_max):
        raise ValueError(
            f"{path}: preprocessed with r_max {dataset.r_max} Å, the model's is {model.r_max} "
            f"Å: preprocess it again with --r-max {model.r_max}"
        )
    reads_state = bool(model.energy_model.graph_inputs)
    check_label_keys(dataset, label_keys, reads_state, "give its keys (--energy-key, ...)")
    kept = dataset.manifest.get("config_type_key")  # None: preprocessed before types were kept
    if kept is not None and kept != label_keys.config_type_key:
        raise ValueError(
            f"{path}: preprocessed with config types from {kept!r}, evaluated with "
            f"{label_keys.config_type_key!r}: give --config-type-key {kept} or preprocess it "
            "again"
        )
    return (TypedGraph(dataset[k], dataset.config_type(k)) for k in range(len(dataset)))


def predict_batches(
    model: Potential | ExportedPotential,
    structures: Iterable[Structure],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    compute_stress: bool | None = False,
) -> Iterator[tuple[list[Structure], Predictions]]:
    """Batched inference over a stream of structures, without keeping the derivative graph.

    Only one batch of structures and predictions is held at a time, so a file or preprocessed
    directory larger than memory can be evaluated.

    Args:
        model: the potential; evaluated in eval mode, its training flag is restored after,
            in the matmul precision of its policy (``equiforce.precision.precision_scope``).
            Or an exported package (``equiforce.export.load_exported``): run one structure
            per call, as exported, on its device; stress where it was exported with it.
        structures: ``Configuration`` objects (converted with the model's type names and
            cutoff) or single-structure graph dicts from ``configuration_to_graph``, any
            iterable.
        batch_size: structures per forward pass.
        device: where to run; None keeps the model's device, otherwise the model is moved
            there (in place).
        compute_stress: also predict the stress; None: for the batches where a structure
            carries a stress label.

    Yields:
        Each batch's structures and their ``Predictions`` (float64, whatever the model dtype;
        ``stress`` None when not computed).

    Raises:
        ValueError: ``batch_size`` < 1, a structure has an element the model does not know,
            or a graph was built for another type order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    package = isinstance(model, ExportedPotential)
    if package:
        if device is not None and torch.device(device) != model.device:
            raise ValueError(
                f"the package was loaded for {model.device}, not {device}: load it there "
                "(load_exported(path, device))"
            )
        device = model.device
    else:
        if device is not None:
            model.to(device)
        device = next(model.parameters()).device
    was_training = False if package else model.training
    model.eval()
    index = 0
    try:
        for chunk in chunked(structures, batch_size):
            stress = compute_stress
            if stress is None:
                stress = any(_reference_of(s).stress is not None for s in chunk)
                stress = stress and (not package or keys.STRESS in model.outputs)
            graphs = [_to_graph(s, model, index + k) for k, s in enumerate(chunk)]
            if package:
                out = _package_outputs(model, graphs, device, stress, index)
            else:  # forces are autograd derivatives, even under no_grad
                with torch.enable_grad(), precision_scope(current_policy(model)):
                    out = model(
                        batch_to(collate(graphs), device),
                        compute_forces=True,
                        compute_stress=stress,
                        create_graph=False,
                    )
            index += len(chunk)

            yield (
                chunk,
                Predictions(
                    energy=_float64(out[keys.ENERGY]),
                    forces=_float64(out[keys.FORCES]),
                    n_atoms=np.asarray([_n_atoms(s) for s in chunk], dtype=np.int64),
                    stress=_float64(out[keys.STRESS]) if stress else None,
                    node_energy=_float64(out[keys.NODE_ENERGY])
                    if keys.NODE_ENERGY in out
                    else None,
                ),
            )
    finally:
        if not package:
            model.train(was_training)


def _package_outputs(
    package: ExportedPotential,
    graphs: Sequence[Mapping[str, torch.Tensor]],
    device: torch.device,
    stress: bool,
    first: int,
) -> dict[str, torch.Tensor]:
    """Energy (n,), forces (n_atoms, 3) and with ``stress`` stress (n, 3, 3) of the graphs
    (structures ``first``, ``first + 1``, ... of the stream), one package call each.

    Raises:
        ValueError: a structure the package cannot run (too few atoms or neighbour pairs,
            more atoms than its ``max_atoms``), its index in the stream named.
    """
    outs = []
    for k, graph in enumerate(graphs):
        try:
            outs.append(package(batch_to(collate([graph]), device), compute_stress=stress))
        except ValueError as err:
            raise ValueError(f"structure {first + k}: {err}") from err
    names = (keys.ENERGY, keys.FORCES) + ((keys.STRESS,) if stress else ())
    return {name: torch.cat([out[name] for out in outs]) for name in names}


def _float64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def predict(
    model: Potential,
    structures: Sequence[Structure],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    compute_stress: bool = False,
) -> Predictions:
    """Batched inference without keeping the derivative graph (``predict_batches``, all
    predictions concatenated).

    Returns:
        ``Predictions`` in float64, whatever the model dtype.

    Raises:
        ValueError: ``structures`` is empty, or as ``predict_batches``.
    """
    if len(structures) == 0:
        raise ValueError("predict needs at least one structure")
    parts = [p for _, p in predict_batches(model, structures, batch_size, device, compute_stress)]
    per_atom = all(p.node_energy is not None for p in parts)
    return Predictions(
        energy=np.concatenate([p.energy for p in parts]),
        forces=np.concatenate([p.forces for p in parts]),
        n_atoms=np.concatenate([p.n_atoms for p in parts]),
        stress=np.concatenate([p.stress for p in parts]) if compute_stress else None,
        node_energy=np.concatenate([p.node_energy for p in parts]) if per_atom else None,
    )


DEFAULT_PARITY_POINTS = 100_000  # values per quantity a result keeps for its parity plot


class _ParitySample:
    """A uniform random sample of at most ``limit`` (reference, predicted) pairs of a stream,
    in stream order: each pair draws a key, the ``limit`` smallest keys are kept (pruned when
    twice as many are held), so memory stays bounded and a stream under the limit is kept
    whole."""

    def __init__(self, limit: int, seed: Sequence[int]):
        self._limit = limit
        self._rng = np.random.default_rng(seed)
        self._parts: list[np.ndarray] = []  # (n, 4): key, sequence number, reference, predicted
        self._held = 0
        self._seen = 0
        self._threshold = np.inf

    def add(self, reference: np.ndarray, predicted: np.ndarray) -> None:
        n = reference.size
        rows = np.stack(
            [
                self._rng.random(n),
                np.arange(self._seen, self._seen + n, dtype=np.float64),
                reference.ravel(),
                predicted.ravel(),
            ],
            axis=1,
        )
        self._seen += n
        rows = rows[rows[:, 0] < self._threshold]
        self._parts.append(rows)
        self._held += len(rows)
        if self._held > 2 * self._limit:
            self._prune()

    def _prune(self) -> np.ndarray:
        rows = np.concatenate(self._parts) if self._parts else np.zeros((0, 4))
        if len(rows) > self._limit:
            rows = rows[np.argpartition(rows[:, 0], self._limit - 1)[: self._limit]]
            self._threshold = rows[:, 0].max()
        self._parts, self._held = [rows], len(rows)
        return rows

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled reference and predicted values, in stream order."""
        rows = self._prune()
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        return rows[:, 2].copy(), rows[:, 3].copy()


_QUANTITIES = {  # name: (unit of the error, parity label or None)
    "energy": ("meV", None),
    "energy_per_atom": ("meV/atom", "energy per atom (eV/atom)"),
    "forces": ("meV/Å", "force component (eV/Å)"),
    "stress": ("meV/Å^3", "stress component (eV/Å^3)"),
}


class ErrorTally:
    """Errors of a model over a stream of labelled structures, batch after batch.

    Per quantity it keeps the sums of |error| and error^2 and their count, and a uniform
    random sample of at most ``max_parity_points`` (reference, predicted) pairs for the parity
    plot (all of them below that), so memory does not grow with the data.

    Args:
        max_parity_points: pairs per quantity kept for the parity plot.
        seed: seeds the sample's draws (a result is reproducible).
        type_names: the model's species (its type indices' symbols): with them the force
            errors are also tallied by element.
        parity: keep the parity samples (a group's tally does not).
        by_group: also tally the structures of each config type and of each electronic
            state apart (``_GROUPINGS``).
    """

    def __init__(
        self,
        max_parity_points: int = DEFAULT_PARITY_POINTS,
        seed: int = 0,
        type_names: Sequence[str] | None = None,
        *,
        parity: bool = True,
        by_group: bool = True,
    ):
        if max_parity_points < 1:
            raise ValueError(f"max_parity_points must be >= 1, got {max_parity_points}")
        self.n_configs = 0
        self.n_atoms = 0
        self._type_names = None if type_names is None else list(type_names)
        self._sums = {name: np.zeros(3) for name in _QUANTITIES}  # |e|, e^2, count
        self._by_species: dict[str, np.ndarray] = {}  # symbol -> |e|, e^2, count of forces
        self._samples = {
            name: _ParitySample(max_parity_points, (seed, k))
            for k, (name, (_, label)) in enumerate(_QUANTITIES.items())
            if label is not None and parity
        }
        # grouping -> group -> its tally
        self._groups: dict[str, dict[str, ErrorTally]] | None = None
        if by_group:
            self._groups = {grouping: {} for grouping in _GROUPINGS}

    def add(self, structures: Sequence[Structure], pred: Predictions) -> None:
        """Account for ``structures`` and their predictions (``pred.stress`` None: their stress
        labels are not compared)."""
        self._add_by_group(structures, pred)
        references = [_reference_of(s) for s in structures]
        self.n_configs += len(structures)
        self.n_atoms += int(pred.n_atoms.sum())
        energies = [k for k, r in enumerate(references) if r.energy is not None]
        if energies:
            reference = np.array([references[k].energy for k in energies])
            predicted, n_atoms = pred.energy[energies], pred.n_atoms[energies]
            self._count("energy", _MILLI * (predicted - reference))
            self._count("energy_per_atom", _MILLI * (predicted - reference) / n_atoms)
            self._sample("energy_per_atom", reference / n_atoms, predicted / n_atoms)
        forces = [k for k, r in enumerate(references) if r.forces is not None]
        if forces:
            offsets = np.concatenate([[0], np.cumsum(pred.n_atoms)])
            reference = np.concatenate([references[k].forces for k in forces]).ravel()
            predicted = np.concatenate([pred.forces[offsets[k] : offsets[k + 1]] for k in forces])
            self._count("forces", _MILLI * (predicted.ravel() - reference))
            self._sample("forces", reference, predicted.ravel())
            if self._type_names is not None:
                labelled = [structures[k] for k in forces]
                self._count_by_species(labelled, predicted - reference.reshape(-1, 3))
        stresses = [k for k, r in enumerate(references) if r.stress is not None]
        if stresses and pred.stress is not None:
            reference = np.stack([references[k].stress for k in stresses]).ravel()
            predicted = pred.stress[stresses].ravel()
            self._count("stress", _MILLI * (predicted - reference))
            self._sample("stress", reference, predicted)

    def _add_by_group(self, structures: Sequence[Structure], pred: Predictions) -> None:
        """Account for the structures of each (known) group in its own tally."""
        for grouping, group_of in _GROUPINGS.items() if self._groups is not None else ():
            tallies = self._groups[grouping]
            groups = [group_of(s) for s in structures]
            for group in dict.fromkeys(g for g in groups if g is not None):
                picked = [j for j, g in enumerate(groups) if g == group]
                if group not in tallies:
                    tallies[group] = ErrorTally(parity=False, by_group=False)
                tallies[group].add([structures[j] for j in picked], _subset(pred, picked))

    def _sample(self, name: str, reference: np.ndarray, predicted: np.ndarray) -> None:
        """Offer (reference, predicted) pairs to the quantity's parity sample, if kept."""
        if name in self._samples:
            self._samples[name].add(reference, predicted)

    def _count_by_species(self, structures: Sequence[Structure], errors: np.ndarray) -> None:
        """Add the force errors (n_atoms, 3) eV/Å of ``structures`` (concatenated) to the
        tallies of their atoms' elements."""
        symbols = np.concatenate([_symbols(s, self._type_names) for s in structures])
        for symbol in np.unique(symbols):
            mine = _MILLI * errors[symbols == symbol].ravel()
            sums = self._by_species.setdefault(str(symbol), np.zeros(3))
            sums += (np.abs(mine).sum(), np.square(mine).sum(), mine.size)

    def _count(self, name: str, errors: np.ndarray) -> None:
        errors = np.asarray(errors, dtype=np.float64).ravel()
        self._sums[name] += (np.abs(errors).sum(), np.square(errors).sum(), errors.size)

    def result(self) -> EvaluationResult:
        """The errors so far (quantities without any label left out)."""
        metrics, parity = {}, {}
        for name, (unit, label) in _QUANTITIES.items():
            abs_sum, sq_sum, count = self._sums[name]
            if count == 0:
                continue
            mae, rmse = float(abs_sum / count), float(np.sqrt(sq_sum / count))
            metrics[name] = ErrorStats(mae=mae, rmse=rmse, count=int(count), unit=unit)
            if name in self._samples:
                parity[name] = ParityData(*self._samples[name].arrays(), label)
        unit = _QUANTITIES["forces"][0]
        by_species = {
            symbol: ErrorStats(
                float(abs_sum / count), float(np.sqrt(sq_sum / count)), int(count), unit
            )
            for symbol, (abs_sum, sq_sum, count) in sorted(self._by_species.items())
        }
        groups = {
            grouping: {group: tally.result() for group, tally in tallies.items()}
            for grouping, tallies in (self._groups or {}).items()
        }
        return EvaluationResult(
            self.n_configs,
            self.n_atoms,
            metrics,
            parity,
            by_species,
            groups.get("config_type", {}),
            groups.get("state", {}),
        )


def evaluate(
    model: Potential,
    structures: Iterable[Structure],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    max_parity_points: int = DEFAULT_PARITY_POINTS,
) -> EvaluationResult:
    """Compare model predictions with the labels of ``structures``, streamed batch by batch.

    Args:
        model: the potential.
        structures: labelled ``Configuration`` objects or graph dicts (see ``predict``), any
            iterable (only a batch is held at a time); stress is predicted for the batches
            with a stress label.
        batch_size: structures per forward pass.
        device: see ``predict``.
        max_parity_points: pairs per quantity kept for the parity plots.

    Returns:
        ``EvaluationResult`` with errors in meV units and the parity data.
    """
    tally = ErrorTally(max_parity_points, type_names=model.type_names)
    for chunk, pred in predict_batches(model, structures, batch_size, device, None):
        tally.add(chunk, pred)
    return tally.result()


ALL_FILES = "all"  # key of ``evaluate_files``'s result over every file together


def evaluate_files(
    model: Potential,
    files: Mapping[str, Iterable[Structure]],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    max_parity_points: int = DEFAULT_PARITY_POINTS,
    sinks: Mapping[str, Callable[[Sequence[Structure], Predictions], None]] | None = None,
    compute_stress: bool | None = None,
) -> dict[str, EvaluationResult]:
    """Errors per file and over all files together, each file streamed batch by batch.

    Args:
        model: the potential.
        files: file name -> its structures (see ``evaluate``; any iterable, e.g. a streaming
            reader or an ``OnDiskDataset``); names other than ``"all"``.
        batch_size: structures per forward pass.
        device: see ``predict``.
        max_parity_points: pairs per quantity kept for each result's parity plots.
        sinks: file name -> a callable given each of its batches' structures and
            predictions, in order (e.g. ``equiforce.train.predictions.PredictionWriter``).
        compute_stress: see ``predict_batches`` (None: where a structure has a stress label).

    Returns:
        ``EvaluationResult`` per file name, in the order of ``files``, then ``"all"``.
    """
    if ALL_FILES in files:
        raise ValueError(f"{ALL_FILES!r} is reserved for the result over all files")
    names = model.type_names
    results, together = {}, ErrorTally(max_parity_points, seed=len(files), type_names=names)
    for number, (name, structures) in enumerate(files.items()):
        tally = ErrorTally(max_parity_points, seed=number, type_names=names)
        sink = (sinks or {}).get(name)
        for chunk, pred in predict_batches(model, structures, batch_size, device, compute_stress):
            tally.add(chunk, pred)
            together.add(chunk, pred)
            if sink is not None:
                sink(chunk, pred)
        results[name] = tally.result()
    results[ALL_FILES] = together.result()
    return results


def errors_of(structures: Sequence[Structure], pred: Predictions) -> EvaluationResult:
    """Compare given predictions (``predict`` output for ``structures``) with the labels.

    Args:
        structures: the labelled structures, in the order of ``pred``.
        pred: predictions; stress errors need ``pred.stress``.

    Returns:
        ``EvaluationResult`` with errors in meV units and the parity data.
    """
    tally = ErrorTally()
    tally.add(structures, pred)
    return tally.result()


_TABLE_ORDER = ("energy_per_atom", "energy", "forces", "stress")


def format_table(result: EvaluationResult) -> str:
    """A fixed-width table of MAE/RMSE/count per quantity (and, with several elements, of the
    forces of each; with several config types or electronic states, of each one's energy per
    atom, forces and stress, its structures counted), for the screen."""
    rows = [(name, result.metrics[name]) for name in _TABLE_ORDER if name in result.metrics]
    if len(result.forces_by_species) > 1:
        rows += [(f"forces [{s}]", m) for s, m in result.forces_by_species.items()]
    for groups in (result.by_config_type, result.by_state):
        for group, part in groups.items() if len(groups) > 1 else ():
            rows += [
                (f"{name} [{group}: {part.n_configs}]", part.metrics[name])
                for name in ("energy_per_atom", "forces", "stress")
                if name in part.metrics
            ]
    width = max([16] + [len(name) + 2 for name, _ in rows])
    lines = [
        f"{result.n_configs} structures, {result.n_atoms} atoms",
        f"{'quantity':<{width}}{'unit':<10}{'MAE':>12} {'RMSE':>12} {'count':>9}",
    ]
    for name, m in rows:
        # a space between the columns: errors past 1e7 (E0s far off) still read apart
        lines.append(f"{name:<{width}}{m.unit:<10}{m.mae:>12.4f} {m.rmse:>12.4f} {m.count:>9d}")
    return "\n".join(lines)


def _payload(result: EvaluationResult) -> dict:
    def stats(m: ErrorStats) -> dict:
        return {"mae": m.mae, "rmse": m.rmse, "count": m.count, "unit": m.unit}

    def counts_and_metrics(part: EvaluationResult) -> dict:
        return {
            "n_configs": part.n_configs,
            "n_atoms": part.n_atoms,
            "metrics": {name: stats(m) for name, m in part.metrics.items()},
        }

    return {
        **counts_and_metrics(result),
        "forces_by_species": {s: stats(m) for s, m in result.forces_by_species.items()},
        "by_config_type": {k: counts_and_metrics(p) for k, p in result.by_config_type.items()},
        "by_state": {k: counts_and_metrics(p) for k, p in result.by_state.items()},
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
