"""Reading extended XYZ files into validated ``Configuration`` objects.

Labels are looked up by configurable key names (``KeySpec``) in ``atoms.info``, ``atoms.arrays``
and, because ASE moves the standard names (``energy``, ``forces``, ``stress``) onto a
``SinglePointCalculator``, in ``atoms.calc.results``. Every problem with a frame raises a
``DataError`` (or warns with ``CloseAtomsWarning``) whose message names the file, the frame and
the field; nothing is silently dropped.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from equiforce.data.charge_spin import electronic_state
from equiforce.data.graph import Configuration, effective_cell
from equiforce.data.keys import TOTAL_CHARGE, TOTAL_SPIN
from equiforce.data.neighbors import neighbor_list, vesin_box

CLOSE_DISTANCE = 0.1  # Å: two atoms closer than this trigger a CloseAtomsWarning
COINCIDENT_DISTANCE = 1e-6  # Å: two atoms (or images) closer than this are an error
# vesin bins space by the cutoff, so a 0.1 Å search is slow (~15 ms per molecule); search
# pairs within 1 Å (< 1 ms) and keep those closer than CLOSE_DISTANCE.
_SCAN_CUTOFF = 1.0
_STRESS_VIRIAL_RTOL = 1e-6  # relative agreement required when both stress and virials are given


@dataclass(frozen=True)
class KeySpec:
    """Names of the label keys in an extxyz file (``atoms.info`` / ``atoms.arrays`` / calc).

    Attributes:
        energy_key: total energy, eV.
        forces_key: per-atom forces (n_atoms, 3), eV/Å.
        stress_key: stress, eV/Å^3, ASE sign; 3x3, 9 (row-major) or Voigt 6 (ASE order
            xx, yy, zz, yz, xz, xy).
        virials_key: virial, eV, 3x3 or 9; converted to stress = -virial / volume.
        weight_key: per-config weight multiplying every loss term.
        energy_weight_key, forces_weight_key, stress_weight_key: per-config term weights.
        config_type_key: the frame's kind (``atoms.info``, a string: mace-torch's
            ``config_type``, e.g. ``"bulk"``, ``"surface"``), by which ``evaluate`` also
            reports the errors; frames without it are ``"Default"``'s, as mace-torch's.
        config_type_weights: ``(config type, weight)`` pairs multiplying the per-config
            weight of the frames of that type (mace-torch's ``config_type_weights``; types
            not named: 1).
        total_charge_key, total_spin_key: the frame's net charge (e) and spin multiplicity
            (2S + 1) in ``atoms.info`` (default ``"charge"`` and ``"spin"``, as mace-torch's
            and fairchem's calculators read them; mace-torch's training files use
            ``"total_charge"`` and ``"total_spin"``); absent: 0 and 1. Models that condition
            on them (MACE's ``embedding_specs``) read them; the others ignore them.
    """

    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    virials_key: str = "virials"
    weight_key: str = "config_weight"
    energy_weight_key: str = "config_energy_weight"
    forces_weight_key: str = "config_forces_weight"
    stress_weight_key: str = "config_stress_weight"
    config_type_key: str = "config_type"
    config_type_weights: tuple[tuple[str, float], ...] = ()
    total_charge_key: str = "charge"
    total_spin_key: str = "spin"

    def label_keys(self) -> dict[str, Any]:
        """What decides a frame's labels and weights, by field name: what a preprocessed
        directory's manifest records and a reader of it must match. The config type key
        only with config type weights (preprocessed directories keep no config types; their
        weights are in the stored weights), so directories preprocessed before config types
        existed still match."""
        names = dataclasses.asdict(self)
        weights = names.pop("config_type_weights")
        key = names.pop("config_type_key")
        if weights:
            names.update(config_type_key=key, config_type_weights=dict(weights))
        return names

    def config_type_weight(self, config_type: str) -> float:
        """The weight of the frames of ``config_type`` (1 where none is given)."""
        return dict(self.config_type_weights).get(config_type, 1.0)


DEFAULT_KEYS = KeySpec()
DEFAULT_CONFIG_TYPE = "Default"  # a frame's config type without one (mace-torch's)


class DataError(ValueError):
    """Invalid input data; the message names the file, the frame and the field."""


class CloseAtomsWarning(UserWarning):
    """Two atoms are closer than ``CLOSE_DISTANCE`` Å (suspicious, but not fatal)."""


def read_configurations(
    path: str | os.PathLike,
    keys: KeySpec = DEFAULT_KEYS,
    index: str | int | slice = ":",
    *,
    require_energy: bool = False,
    require_forces: bool = False,
    require_label: bool = False,
) -> list[Configuration]:
    """Read and validate the frames of an extended XYZ file.

    Args:
        path: extxyz file.
        keys: label key names.
        index: ASE frame selection (``":"``, ``"10:20"``, an int or a slice).
        require_energy: raise when a frame has no energy.
        require_forces: raise when a frame has no forces.
        require_label: raise when a frame has none of energy, forces and stress (training
            files with partial labels: each frame must teach something).

    Returns:
        One ``Configuration`` per selected frame, in file order, with ``source`` set to
        ``"<path>, frame <k>"``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        DataError: when the file cannot be parsed, selects no frame, or a frame is invalid.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    configs = []
    for label, atoms in _iter_frames(path, index):
        source = f"{path}, {label}"
        config = configuration_from_atoms(
            atoms, keys, source, require_energy=require_energy, require_forces=require_forces
        )
        labels = (config.energy, config.forces, config.stress)
        if require_label and all(label is None for label in labels):
            raise _unlabelled(atoms, keys, source)
        configs.append(config)
    if not configs:
        raise DataError(f"{path}: no frames selected by index {index!r} (empty file?)")
    return configs


def _iter_frames(path: Path, index: str | int | slice) -> Iterator[tuple[str, Any]]:
    """Yield ``(frame label, atoms)`` pairs; a parse error names the frame it happened in."""
    import ase.io
    from ase.io.formats import string2index

    selection = string2index(index) if isinstance(index, str) else index
    iterator = ase.io.iread(str(path), index=selection, format="extxyz")
    count = 0
    while True:
        label = _frame_label(selection, count)
        try:
            atoms = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # ASE raises many types (XYZError, ValueError, IndexError)
            raise DataError(f"{path}, {label}: cannot parse extended XYZ: {exc}") from exc
        yield label, atoms
        count += 1


def _frame_label(selection: int | slice, count: int) -> str:
    """Human label of the ``count``-th selected frame (its file index when known)."""
    if isinstance(selection, int) and selection >= 0:
        return f"frame {selection}"
    if isinstance(selection, slice):
        start, step = selection.start or 0, selection.step or 1
        if start >= 0 and step > 0:
            return f"frame {start + count * step}"
    return f"frame {count} of selection {selection!r}"


def configuration_from_atoms(
    atoms: Any,
    keys: KeySpec = DEFAULT_KEYS,
    source: str = "<atoms>",
    *,
    require_energy: bool = False,
    require_forces: bool = False,
) -> Configuration:
    """Validated, labelled ``Configuration`` from an ``ase.Atoms``.

    Args:
        atoms: structure with labels in ``info``/``arrays`` or a ``SinglePointCalculator``.
        keys: label key names.
        source: description used in error messages, e.g. ``"train.xyz, frame 3"``.
        require_energy: raise when the energy is missing.
        require_forces: raise when the forces are missing.

    Returns:
        The configuration; the cell is zeroed when no axis is periodic (dummy lattices of
        molecule files carry no meaning).

    Raises:
        DataError: naming ``source`` and the field, for any invalid geometry or label.
    """
    positions, cell, pbc = _geometry(atoms, source)
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    _check_distances(positions, cell, pbc, numbers, source)
    config_type = _config_type(atoms, keys.config_type_key, source)
    return Configuration(
        atomic_numbers=numbers,
        positions=positions,
        cell=cell,
        pbc=pbc,
        energy=_energy(atoms, keys.energy_key, source, require_energy),
        forces=_forces(atoms, keys.forces_key, len(numbers), source, require_forces),
        stress=_stress(atoms, keys, cell, pbc, source),
        weight=_weight(atoms, keys.weight_key, source) * keys.config_type_weight(config_type),
        energy_weight=_weight(atoms, keys.energy_weight_key, source),
        forces_weight=_weight(atoms, keys.forces_weight_key, source),
        stress_weight=_weight(atoms, keys.stress_weight_key, source),
        source=source,
        config_type=config_type,
        total_charge=_state(atoms, keys.total_charge_key, TOTAL_CHARGE, source),
        total_spin=_state(atoms, keys.total_spin_key, TOTAL_SPIN, source),
    )


def _state(atoms: Any, key: str, field: str, source: str) -> float:
    """The frame's total charge or spin multiplicity (``graph.electronic_state``)."""
    try:
        return electronic_state(atoms.info, key, field, source)
    except ValueError as error:
        raise DataError(str(error)) from None


def _geometry(atoms: Any, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (n, 3), effective cell (3, 3) and pbc (3,), checked."""
    if len(atoms) == 0:
        raise DataError(f"{source}: empty frame (0 atoms)")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    _require_finite(positions, source, "positions")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = effective_cell(np.asarray(atoms.cell.array, dtype=np.float64), pbc)
    _require_finite(cell, source, "cell")
    try:
        vesin_box(cell, pbc)
    except ValueError as exc:
        raise DataError(f"{source}: field 'cell': {exc}") from None
    return positions, cell, pbc


def _lookup(atoms: Any, key: str) -> Any:
    """Value of ``key`` from ``atoms.info``, ``atoms.arrays`` or the calculator, else None."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    results = getattr(atoms.calc, "results", None) or {}
    return results.get(key)


def _as_float_array(value: Any, source: str, field: str) -> np.ndarray:
    """``value`` as a finite float64 array, or a ``DataError`` naming the field."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: field {field!r} is not numeric: {value!r}") from None
    _require_finite(array, source, field)
    return array


def _require_finite(array: np.ndarray, source: str, field: str) -> None:
    """Raise naming the field when ``array`` holds NaN or inf."""
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(np.atleast_1d(array)))[0].tolist()
        raise DataError(f"{source}: field {field!r} contains NaN or inf (first at index {bad})")


def _present_keys(atoms: Any) -> list[str]:
    """Sorted keys of ``atoms.info``, ``atoms.arrays`` and the calculator results."""
    results = getattr(atoms.calc, "results", None) or {}
    return sorted(set(atoms.info) | set(atoms.arrays) | set(results))


def _missing(atoms: Any, key: str, source: str, what: str) -> DataError:
    """Error for a required label that is absent, listing the keys that are present."""
    return DataError(f"{source}: missing {what} key {key!r}; keys present: {_present_keys(atoms)}")


def _unlabelled(atoms: Any, keys: KeySpec, source: str) -> DataError:
    """Error for a frame that carries no label at all, listing the keys that are present."""
    wanted = [keys.energy_key, keys.forces_key, keys.stress_key, keys.virials_key]
    return DataError(
        f"{source}: no label: none of the keys {wanted} is present "
        f"(keys present: {_present_keys(atoms)})"
    )


def _energy(atoms: Any, key: str, source: str, required: bool) -> float | None:
    """Total energy (eV) or None."""
    value = _lookup(atoms, key)
    if value is None:
        if required:
            raise _missing(atoms, key, source, "energy")
        return None
    energy = _as_float_array(value, source, key)
    if energy.size != 1:
        raise DataError(f"{source}: field {key!r} must be a scalar, got shape {energy.shape}")
    return float(energy.reshape(()))


def _forces(atoms: Any, key: str, n_atoms: int, source: str, required: bool) -> np.ndarray | None:
    """Forces (n_atoms, 3) eV/Å or None."""
    value = _lookup(atoms, key)
    if value is None:
        if required:
            raise _missing(atoms, key, source, "forces")
        return None
    forces = _as_float_array(value, source, key)
    if forces.shape != (n_atoms, 3):
        raise DataError(
            f"{source}: field {key!r} must have shape ({n_atoms}, 3), got {forces.shape}"
        )
    return forces.copy()


def _as_3x3(value: Any, source: str, field: str, voigt: bool) -> np.ndarray:
    """A 3x3 tensor from 3x3, 9 (row-major) or, when ``voigt``, ASE-order Voigt 6 values."""
    from ase.stress import voigt_6_to_full_3x3_stress

    array = _as_float_array(value, source, field)
    if array.shape in ((3, 3), (9,)):
        return array.reshape(3, 3).copy()
    if voigt and array.shape == (6,):
        return np.asarray(voigt_6_to_full_3x3_stress(array), dtype=np.float64)
    allowed = "3x3, 9 or 6 (Voigt)" if voigt else "3x3 or 9"
    raise DataError(f"{source}: field {field!r} must have {allowed} values, got {array.shape}")


def _stress(
    atoms: Any, keys: KeySpec, cell: np.ndarray, pbc: np.ndarray, source: str
) -> np.ndarray | None:
    """Stress (3, 3) eV/Å^3, ASE sign, from the stress key or from the virials; or None."""
    raw_stress = _lookup(atoms, keys.stress_key)
    raw_virial = _lookup(atoms, keys.virials_key)
    if raw_stress is None and raw_virial is None:
        return None
    field = keys.stress_key if raw_stress is not None else keys.virials_key
    if not pbc.any():
        raise DataError(f"{source}: field {field!r} given for a non-periodic structure")
    stress = None if raw_stress is None else _as_3x3(raw_stress, source, keys.stress_key, True)
    if raw_virial is None:
        return stress
    virial = _as_3x3(raw_virial, source, keys.virials_key, False)
    volume = abs(float(np.linalg.det(cell)))
    if not pbc.all() or volume <= 0.0:
        raise DataError(
            f"{source}: field {keys.virials_key!r} needs a 3D periodic cell to convert to stress"
        )
    from_virial = -virial / volume
    if stress is None:
        return from_virial
    scale = max(float(np.abs(stress).max()), float(np.abs(from_virial).max()), 1e-12)
    if np.abs(stress - from_virial).max() > _STRESS_VIRIAL_RTOL * scale:
        raise DataError(
            f"{source}: fields {keys.stress_key!r} and {keys.virials_key!r} disagree "
            "(stress must equal -virial / volume)"
        )
    return stress


def _weight(atoms: Any, key: str, source: str) -> float:
    """A non-negative finite per-config weight (default 1.0)."""
    value = atoms.info.get(key)
    if value is None:
        return 1.0
    weight = _as_float_array(value, source, key)
    if weight.size != 1 or float(weight.reshape(())) < 0.0:
        raise DataError(f"{source}: field {key!r} must be a non-negative scalar, got {value!r}")
    return float(weight.reshape(()))


def _config_type(atoms: Any, key: str, source: str) -> str:
    """The frame's config type (``DEFAULT_CONFIG_TYPE`` without one)."""
    value = atoms.info.get(key)
    if value is None:
        return DEFAULT_CONFIG_TYPE
    if isinstance(value, (str, int, np.integer)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{source}: field {key!r} must be a name (a string), got {value!r}")


def _check_distances(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray, source: str
) -> None:
    """Error on coincident atoms (incl. periodic images); warn on atoms closer than 0.1 Å."""
    from ase.data import chemical_symbols

    edge_index, edge_shift = neighbor_list(positions, cell, pbc, _SCAN_CUTOFF)
    i, j = edge_index
    distances = np.linalg.norm(positions[j] - positions[i] + edge_shift @ cell, axis=1)
    pairs = (i <= j) & (distances < CLOSE_DISTANCE)  # one direction of each close pair
    if not pairs.any():
        return
    k = int(np.argmin(np.where(pairs, distances, np.inf)))
    a, b, d = int(i[k]), int(j[k]), float(distances[k])
    names = f"atoms {a} ({chemical_symbols[numbers[a]]}) and {b} ({chemical_symbols[numbers[b]]})"
    image = " (periodic image)" if edge_shift[k].any() else ""
    if d < COINCIDENT_DISTANCE:
        raise DataError(f"{source}: field 'positions': {names}{image} coincide (d = {d:.1e} Å)")
    warnings.warn(
        f"{source}: field 'positions': {names}{image} are {d:.4f} Å apart "
        f"(< {CLOSE_DISTANCE} Å; {int(pairs.sum())} such pair(s))",
        CloseAtomsWarning,
        stacklevel=2,
    )
