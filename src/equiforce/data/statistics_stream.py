"""Dataset statistics summed one structure at a time: bounded memory for any data size.

``StatisticsAccumulator`` gives the same ``DatasetStatistics`` as
``data.statistics.compute_statistics`` (E0s, average neighbours, force RMS, mean interaction
energy) from sums that do not grow with the data; ``data.ondisk`` keeps them in its manifest.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from equiforce.data.statistics import DatasetStatistics, species_names

__all__ = ["StatisticsAccumulator"]

_N_Z = 119  # atomic numbers 0..118


class StatisticsAccumulator:
    """Sums from which ``DatasetStatistics`` follow, accumulated one structure at a time.

    E0s solve the least-squares normal equations ``(CᵀC) e0 = Cᵀ E`` (C: per-structure atom
    counts by atomic number, E: energies); the minimum-norm solution equals ``np.linalg.lstsq``
    on the counts (as ``data.statistics`` does), also when the stoichiometry is fixed. Memory
    is O(119²) whatever the data size.
    """

    def __init__(self) -> None:
        self.ctc = np.zeros((_N_Z, _N_Z))
        self.cte = np.zeros(_N_Z)
        self.count_per_atom = np.zeros(_N_Z)  # sum over labelled structures of counts / n_atoms
        self.energy_per_atom = 0.0  # sum over labelled structures of E / n_atoms, eV
        self.n_energies = 0
        self.present = np.zeros(_N_Z, dtype=bool)
        self.force_sq = 0.0  # sum of squared force components, (eV/Å)²
        self.n_force_components = 0
        self.n_atoms = 0
        self.n_edges = 0
        self.n_configs = 0

    def add(self, numbers: np.ndarray, n_edges: int, energy: float | None, forces) -> None:
        """Add one structure: atomic numbers (n,), its edge count, energy (eV), forces."""
        counts = np.bincount(numbers, minlength=_N_Z).astype(np.float64)
        self.present |= counts > 0
        self.n_atoms += len(numbers)
        self.n_edges += int(n_edges)
        self.n_configs += 1
        if energy is not None:
            self.ctc += np.outer(counts, counts)
            self.cte += counts * energy
            self.count_per_atom += counts / len(numbers)
            self.energy_per_atom += energy / len(numbers)
            self.n_energies += 1
        if forces is not None:
            self.force_sq += float(np.square(forces).sum())
            self.n_force_components += int(np.size(forces))

    def merge(self, other: "StatisticsAccumulator") -> None:
        """Add the sums of ``other`` (structures accumulated elsewhere, e.g. another file)."""
        for name, value in vars(other).items():
            if name == "present":
                self.present |= value
            else:
                setattr(self, name, getattr(self, name) + value)

    def statistics(
        self,
        type_names: Sequence[str] | None = None,
        isolated_atoms: Mapping[str, float] | None = None,
    ) -> DatasetStatistics:
        """The statistics, as ``data.statistics.compute_statistics`` defines them.

        Args:
            type_names: species order; None: the species present, sorted by atomic number.
            isolated_atoms: E0 per symbol, eV; None fits E0s by least squares.

        Raises:
            ValueError: no structure, a species outside ``type_names``, E0s not determined.
        """
        from ase.data import atomic_numbers

        if self.n_configs == 0:
            raise ValueError("statistics need at least one configuration")
        present = species_names([np.flatnonzero(self.present)])
        type_names = tuple(type_names) if type_names is not None else present
        unknown = sorted(set(present) - set(type_names))
        if unknown:
            raise ValueError(f"species {unknown} occur in the data but not in {list(type_names)}")
        z = np.array([atomic_numbers[name] for name in type_names])
        if isolated_atoms is None:
            e0s = self._fit(type_names, z)
        else:
            missing = [name for name in type_names if name not in isolated_atoms]
            if missing:
                raise ValueError(
                    f"isolated-atom energies lack {missing} (have {sorted(isolated_atoms)})"
                )
            e0s = np.array([float(isolated_atoms[name]) for name in type_names])
        mean_energy = 0.0
        if self.n_energies:
            shifted = self.energy_per_atom - float(self.count_per_atom[z] @ e0s)
            mean_energy = shifted / self.n_energies
        rms = np.sqrt(self.force_sq / self.n_force_components) if self.n_force_components else 0
        if rms == 0.0:
            rms = 1.0  # as data.statistics: no non-zero forces
        return DatasetStatistics(
            type_names=type_names,
            atomic_energies=tuple(float(e) for e in e0s),
            avg_num_neighbors=self.n_edges / self.n_atoms,
            force_rms=float(rms),
            mean_interaction_energy=float(mean_energy),
            n_configs=self.n_configs,
        )

    def _fit(self, type_names: Sequence[str], z: np.ndarray) -> np.ndarray:
        if self.n_energies == 0:
            raise ValueError("no energies in the data to fit E0s; give isolated_atoms")
        diagonal = np.diag(self.ctc)[z]
        missing = [name for name, d in zip(type_names, diagonal, strict=True) if d == 0]
        if missing:
            raise ValueError(
                f"cannot fit E0s of {missing}: no labelled configuration contains them; "
                "give isolated_atoms"
            )
        e0s, *_ = np.linalg.lstsq(self.ctc[np.ix_(z, z)], self.cte[z], rcond=None)
        return e0s

    def to_json(self) -> dict[str, Any]:
        """The sums as JSON-able lists (kept in the manifest)."""
        out = {}
        for name, value in vars(self).items():
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StatisticsAccumulator":
        acc = cls()
        for name, value in data.items():
            current = getattr(acc, name)
            if isinstance(current, np.ndarray):
                value = np.asarray(value, dtype=current.dtype)
            setattr(acc, name, value)
        return acc
