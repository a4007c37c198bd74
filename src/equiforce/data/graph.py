"""One structure -> one graph dict (neighbour list, types, labels), ready for ``collate``."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from equiforce.data import keys
from equiforce.data.charge_spin import atoms_state
from equiforce.data.neighbors import neighbor_list


@dataclass
class Configuration:
    """A structure with its labels, as read from a file (NumPy, eV/Å units).

    Attributes:
        atomic_numbers: (n_atoms,) int.
        positions: (n_atoms, 3) float64, Å.
        cell: (3, 3) float64, Å (zeros when there is no cell).
        pbc: (3,) bool.
        energy: total energy, eV, or None when unlabelled.
        forces: (n_atoms, 3) float64, eV/Å, or None.
        stress: (3, 3) float64, eV/Å^3, ASE sign, or None.
        weight, energy_weight, forces_weight, stress_weight: per-config loss weights.
        source: where it came from, e.g. ``"train.xyz, frame 12"``; used in error messages.
        config_type: the kind of structure (``KeySpec.config_type_key``; ``"Default"``
            without one), or None where not known.
        total_charge: net charge, elementary charges (default 0: neutral).
        total_spin: spin multiplicity 2S + 1 (default 1: singlet).
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    weight: float = 1.0
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 1.0
    source: str = "<memory>"
    config_type: str | None = None
    total_charge: float = 0.0
    total_spin: float = 1.0

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return int(len(self.atomic_numbers))


def type_indices(atomic_numbers: np.ndarray, type_names: Sequence[str], source: str) -> np.ndarray:
    """Map atomic numbers to indices into ``type_names``.

    Args:
        atomic_numbers: (n_atoms,) int.
        type_names: chemical symbols of the model's species.
        source: description of the structure, used in the error message.

    Returns:
        (n_atoms,) int64 indices into ``type_names``.

    Raises:
        ValueError: naming ``source`` and the element when an element is not in the model.
    """
    from ase.data import chemical_symbols

    numbers = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    lookup = _type_lookup(tuple(type_names))
    valid = (numbers >= 0) & (numbers < len(lookup))
    indices = np.where(valid, lookup[np.where(valid, numbers, 0)], -1)
    unknown = np.flatnonzero(indices < 0)
    if unknown.size:
        n = int(unknown[0])
        z = int(numbers[n])
        element = chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"
        raise ValueError(
            f"{source}: element {element} (atom {n}) is unknown to the model, which knows "
            f"{list(type_names)}"
        )
    return indices


@functools.cache
def _type_lookup(type_names: tuple[str, ...]) -> np.ndarray:
    """(len(ase.data.chemical_symbols),) int64, read-only: atomic number -> index into
    ``type_names``, -1 for elements not in it (built once per species list: an MD step's
    batch asks for it every step)."""
    from ase.data import atomic_numbers as symbol_to_z
    from ase.data import chemical_symbols

    lookup = np.full(len(chemical_symbols), -1, dtype=np.int64)
    for index, name in enumerate(type_names):
        lookup[symbol_to_z[name]] = index
    lookup.flags.writeable = False
    return lookup


def configuration_to_graph(
    config: Configuration, type_names: Sequence[str], r_max: float
) -> dict[str, torch.Tensor]:
    """Build the graph dict of one configuration.

    Args:
        config: the structure and its labels.
        type_names: chemical symbols of the model's species, in ``atom_type`` order.
        r_max: neighbour cutoff, Å.

    Returns:
        Graph dict with node, edge and graph fields (graph fields have leading dim 1);
        missing labels are zero-filled and flagged by ``has_energy/has_forces/has_stress``.
    """
    n_atoms = config.n_atoms
    f64 = torch.float64
    stress = np.zeros((3, 3)) if config.stress is None else config.stress
    forces = np.zeros((n_atoms, 3)) if config.forces is None else config.forces
    return {
        **_structure(config, type_names, r_max),
        keys.ATOMIC_NUMBERS: torch.as_tensor(config.atomic_numbers, dtype=torch.long),
        keys.FORCES: torch.as_tensor(forces, dtype=f64),
        keys.PBC: torch.as_tensor(config.pbc, dtype=torch.bool).reshape(1, 3),
        keys.ENERGY: torch.tensor([0.0 if config.energy is None else config.energy], dtype=f64),
        keys.STRESS: torch.as_tensor(stress, dtype=f64).reshape(1, 3, 3),
        keys.N_ATOMS: torch.tensor([n_atoms], dtype=torch.long),
        keys.ENERGY_WEIGHT: torch.tensor([config.weight * config.energy_weight], dtype=f64),
        keys.FORCES_WEIGHT: torch.tensor([config.weight * config.forces_weight], dtype=f64),
        keys.STRESS_WEIGHT: torch.tensor([config.weight * config.stress_weight], dtype=f64),
        keys.HAS_ENERGY: torch.tensor([config.energy is not None]),
        keys.HAS_FORCES: torch.tensor([config.forces is not None]),
        keys.HAS_STRESS: torch.tensor([config.stress is not None]),
    }


def _structure(
    config: Configuration, type_names: Sequence[str], r_max: float
) -> dict[str, torch.Tensor]:
    """The model inputs of one structure that a batch concatenates: positions, species
    indices, edges within ``r_max`` (contiguous), their shifts, the (1, 3, 3) cell and the
    (1,) total charge and spin multiplicity."""
    edge_index, edge_shift = neighbor_list(config.positions, config.cell, config.pbc, r_max)
    f64 = torch.float64
    return {
        keys.POSITIONS: torch.as_tensor(config.positions, dtype=f64),
        keys.ATOM_TYPE: torch.as_tensor(
            type_indices(config.atomic_numbers, type_names, config.source)
        ),
        keys.EDGE_INDEX: torch.as_tensor(np.ascontiguousarray(edge_index)),
        keys.EDGE_SHIFT: torch.as_tensor(edge_shift, dtype=f64),
        keys.CELL: torch.as_tensor(config.cell, dtype=f64).reshape(1, 3, 3),
        keys.TOTAL_CHARGE: torch.tensor([config.total_charge], dtype=f64),
        keys.TOTAL_SPIN: torch.tensor([config.total_spin], dtype=f64),
    }


def model_inputs(
    config: Configuration, type_names: Sequence[str], r_max: float
) -> dict[str, torch.Tensor]:
    """The batch of one unlabelled structure with only the model's inputs
    (``keys.MODEL_INPUT_KEYS`` and ``keys.GRAPH_STATE_KEYS``): what
    ``collate([configuration_to_graph(...)])`` gives for those keys, without the label fields
    and the concatenation (an MD step's graph).

    Args:
        config: the structure (its labels, if any, are not used).
        type_names: chemical symbols of the model's species, in ``atom_type`` order.
        r_max: neighbour cutoff, Å.

    Returns:
        ``pos`` (n_atoms, 3) float64 Å, ``atom_type`` (n_atoms,), ``edge_index`` (2, n_edges),
        ``edge_shift`` (n_edges, 3) float64, ``cell`` (1, 3, 3) float64 Å,
        ``total_charge`` and ``total_spin`` (1,) float64, ``batch`` (n_atoms,) zeros, ``ptr``
        [0, n_atoms] (int64 where not said).
    """
    n_atoms = config.n_atoms
    return {
        **_structure(config, type_names, r_max),
        keys.BATCH: torch.zeros(n_atoms, dtype=torch.long),
        keys.PTR: torch.tensor([0, n_atoms], dtype=torch.long),
    }


def effective_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The cell a structure is modelled with: zeros when no axis is periodic.

    A molecule's (dummy) lattice has no physical meaning; zeroing it makes its volume 0, so
    ``Potential`` reports zero stress for it. Mixed-pbc cells (slabs) are kept as given.

    Args:
        cell: (3, 3) float64, Å.
        pbc: (3,) bool.

    Returns:
        (3, 3) float64 copy of ``cell``, or zeros.
    """
    if not np.asarray(pbc, dtype=bool).any():
        return np.zeros((3, 3))
    return np.array(cell, dtype=np.float64).reshape(3, 3)


def atoms_to_configuration(atoms, source: str = "<atoms>") -> Configuration:
    """Unlabelled ``Configuration`` from an ``ase.Atoms`` (for inference).

    Args:
        atoms: the structure; a cell without any periodic axis is replaced by zeros. Its
            ``info["charge"]`` (net charge, e) and ``info["spin"]`` (spin multiplicity), as
            mace-torch's and fairchem's calculators read them, default to 0 and 1.
        source: description used in error messages.

    Returns:
        Configuration with no labels.

    Raises:
        ValueError: naming ``source`` and the field, for a charge or spin that is not a
            finite number (or a multiplicity below 1).
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    return Configuration(
        atomic_numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=effective_cell(np.asarray(atoms.cell.array, dtype=np.float64), pbc),
        pbc=pbc,
        source=source,
        **atoms_state(atoms, source),  # total_charge, total_spin: Configuration's fields
    )
