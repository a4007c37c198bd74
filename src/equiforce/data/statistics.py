"""Dataset statistics that feed a model spec: species, E0s, neighbours, force RMS, shift.

MACE's default ("rms_forces_scaling") uses ``scale = force_rms`` and
``shift = mean_interaction_energy``, together with ``avg_num_neighbors`` and the per-type
``atomic_energies`` (E0s). The statistics are computed from ``Configuration`` objects or from
preprocessed graph dicts (e.g. a ``GraphDataset``, so a cached dataset needs no re-reading).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from equiforce.data import keys as fields
from equiforce.data.extxyz import DEFAULT_KEYS, DataError, KeySpec, read_configurations
from equiforce.data.graph import Configuration
from equiforce.data.neighbors import neighbor_list

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetStatistics:
    """Dataset-derived constants of a model spec.

    Attributes:
        type_names: chemical symbols, sorted by atomic number, in ``atom_type`` order.
        atomic_energies: E0 per type, eV, aligned with ``type_names``.
        avg_num_neighbors: mean number of neighbours within ``r_max`` per atom.
        force_rms: root mean square of all force components, eV/Å (1.0 when the data
            have no non-zero forces).
        mean_interaction_energy: mean over labelled configs of (E - sum E0) / n_atoms, eV.
        n_configs: number of configurations the statistics were computed from.
    """

    type_names: tuple[str, ...]
    atomic_energies: tuple[float, ...]
    avg_num_neighbors: float
    force_rms: float
    mean_interaction_energy: float
    n_configs: int

    @property
    def atomic_energy_dict(self) -> dict[str, float]:
        """E0 per chemical symbol, eV."""
        return dict(zip(self.type_names, self.atomic_energies, strict=True))


class _Record(NamedTuple):
    """What the statistics need from one structure."""

    numbers: np.ndarray  # (n_atoms,) int64
    energy: float | None  # eV
    forces: np.ndarray | None  # (n_atoms, 3) eV/Å
    n_edges: int


def species_names(atomic_numbers: Iterable[Iterable[int]]) -> tuple[str, ...]:
    """Chemical symbols present, sorted by atomic number.

    Args:
        atomic_numbers: per structure, its (n_atoms,) atomic numbers.

    Returns:
        Tuple of unique symbols, e.g. ``("H", "C", "O")``.
    """
    from ase.data import chemical_symbols

    present: set[int] = set()
    for numbers in atomic_numbers:
        present.update(int(z) for z in np.asarray(numbers).reshape(-1))
    return tuple(chemical_symbols[z] for z in sorted(present))


def compute_statistics(
    configs: Sequence[Configuration] | Sequence[Mapping[str, Any]],
    r_max: float,
    type_names: Sequence[str] | None = None,
    isolated_atoms: Mapping[str, float] | None = None,
) -> DatasetStatistics:
    """Compute the dataset-derived constants of a model spec from a training set.

    Args:
        configs: training ``Configuration`` objects, or graph dicts (a ``GraphDataset``),
            whose edges must have been built with this ``r_max``.
        r_max: neighbour cutoff, Å.
        type_names: model species; default: the dataset's ``type_names`` attribute, else the
            species present, sorted by atomic number.
        isolated_atoms: E0 per chemical symbol, eV (see ``read_isolated_atom_energies``);
            when None, E0s are fitted by least squares of energies on per-species counts.

    Returns:
        The statistics.

    Raises:
        ValueError: on an empty set, a cutoff that differs from a dataset's, a species in the
            data but not in ``type_names``, or E0s that cannot be determined.
    """
    if len(configs) == 0:
        raise ValueError("compute_statistics needs at least one configuration")
    dataset_r_max = getattr(configs, "r_max", None)
    if dataset_r_max is not None and not np.isclose(dataset_r_max, r_max):
        raise ValueError(f"dataset graphs were built with r_max={dataset_r_max}, not {r_max}")
    records = [_record(item, r_max) for item in configs]
    present = species_names(r.numbers for r in records)
    if type_names is None:
        type_names = getattr(configs, "type_names", None) or present
    type_names = tuple(type_names)
    unknown = sorted(set(present) - set(type_names))
    if unknown:
        raise ValueError(f"species {unknown} occur in the data but not in {list(type_names)}")
    if isolated_atoms is None:
        atomic_energies = _fit_atomic_energies(records, type_names)
    else:
        atomic_energies = _isolated_atomic_energies(isolated_atoms, type_names)
    n_atoms = sum(len(r.numbers) for r in records)
    return DatasetStatistics(
        type_names=type_names,
        atomic_energies=tuple(float(e) for e in atomic_energies),
        avg_num_neighbors=sum(r.n_edges for r in records) / n_atoms,
        force_rms=_force_rms(records),
        mean_interaction_energy=_mean_interaction_energy(records, type_names, atomic_energies),
        n_configs=len(records),
    )


def _record(item: Configuration | Mapping[str, Any], r_max: float) -> _Record:
    """Reduce a configuration or a graph dict to what the statistics need."""
    if isinstance(item, Configuration):
        edge_index, _ = neighbor_list(item.positions, item.cell, item.pbc, r_max)
        return _Record(item.atomic_numbers, item.energy, item.forces, edge_index.shape[1])
    has_energy = bool(item[fields.HAS_ENERGY].reshape(-1)[0])
    has_forces = bool(item[fields.HAS_FORCES].reshape(-1)[0])
    return _Record(
        numbers=item[fields.ATOMIC_NUMBERS].numpy(),
        energy=float(item[fields.ENERGY].reshape(-1)[0]) if has_energy else None,
        forces=item[fields.FORCES].numpy() if has_forces else None,
        n_edges=int(item[fields.EDGE_INDEX].shape[1]),
    )


def _counts(numbers: np.ndarray, type_names: Sequence[str]) -> np.ndarray:
    """(n_types,) float64 number of atoms of each type."""
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[int(z)] for z in numbers]
    return np.array([symbols.count(name) for name in type_names], dtype=np.float64)


def _fit_atomic_energies(records: Sequence[_Record], type_names: Sequence[str]) -> np.ndarray:
    """E0s (n_types,) eV by least squares of total energies on per-type atom counts."""
    labelled = [r for r in records if r.energy is not None]
    if not labelled:
        raise ValueError("no energies in the data to fit E0s; give isolated_atoms")
    counts = np.stack([_counts(r.numbers, type_names) for r in labelled])
    missing = [name for name, n in zip(type_names, counts.sum(axis=0), strict=True) if n == 0]
    if missing:
        raise ValueError(
            f"cannot fit E0s of {missing}: no labelled configuration contains them; "
            "give isolated_atoms"
        )
    energies = np.array([r.energy for r in labelled])
    e0s, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    if rank < len(type_names):
        # Fixed stoichiometry (e.g. one molecule): only combinations of E0s are determined;
        # lstsq returns the minimum-norm solution, which still centres the energies.
        logger.info(
            "E0 least squares is rank %d < %d types: E0s are not unique (use isolated atoms "
            "for physical E0s)",
            rank,
            len(type_names),
        )
    return e0s


def _isolated_atomic_energies(
    isolated_atoms: Mapping[str, float], type_names: Sequence[str]
) -> np.ndarray:
    """E0s (n_types,) eV taken from isolated-atom energies."""
    missing = [name for name in type_names if name not in isolated_atoms]
    if missing:
        raise ValueError(f"isolated-atom energies lack {missing} (have {sorted(isolated_atoms)})")
    return np.array([float(isolated_atoms[name]) for name in type_names])


def _force_rms(records: Sequence[_Record]) -> float:
    """RMS over all force components, eV/Å; 1.0 (with a warning) when there is none."""
    forces = [r.forces.reshape(-1) for r in records if r.forces is not None]
    rms = float(np.sqrt(np.mean(np.square(np.concatenate(forces))))) if forces else 0.0
    if rms == 0.0:
        warnings.warn("the data have no non-zero forces; force_rms set to 1.0", stacklevel=3)
        return 1.0
    return rms


def _mean_interaction_energy(
    records: Sequence[_Record], type_names: Sequence[str], atomic_energies: np.ndarray
) -> float:
    """Mean of (E - sum E0) / n_atoms over configs with an energy, eV (0.0 if none)."""
    per_atom = [
        (r.energy - float(_counts(r.numbers, type_names) @ atomic_energies)) / len(r.numbers)
        for r in records
        if r.energy is not None
    ]
    return float(np.mean(per_atom)) if per_atom else 0.0


def read_isolated_atom_energies(
    path: str | os.PathLike, keys: KeySpec = DEFAULT_KEYS
) -> dict[str, float]:
    """Read E0s from a file of single-atom frames with energies.

    Args:
        path: extxyz file, one isolated atom per frame.
        keys: label key names (only ``energy_key`` is needed).

    Returns:
        E0 per chemical symbol, eV.

    Raises:
        DataError: for a frame with more than one atom, a missing energy, or an element
            that appears twice.
    """
    from ase.data import chemical_symbols

    energies: dict[str, float] = {}
    for config in read_configurations(path, keys, require_energy=True):
        if config.n_atoms != 1:
            raise DataError(
                f"{config.source}: isolated-atom frames must have 1 atom, got {config.n_atoms}"
            )
        symbol = chemical_symbols[int(config.atomic_numbers[0])]
        if symbol in energies:
            raise DataError(f"{config.source}: second isolated-atom energy for {symbol}")
        energies[symbol] = float(config.energy)
    return energies
