"""A structure's total charge and spin multiplicity: read from ``atoms.info`` and checked
against what a model embeds.

Kept apart from the model code (``equiforce.nn.mace.electronic_state`` embeds them): an
exported package checks a structure's state with ``check_state`` without importing any
model or kernel module.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch

from equiforce.data import keys

# the ``atoms.info`` entries of a structure's state, as mace-torch's and fairchem's
# calculators read them
STATE_INFO_KEYS: Mapping[str, str] = MappingProxyType(
    {keys.TOTAL_CHARGE: "charge", keys.TOTAL_SPIN: "spin"}
)


def atoms_state(atoms, source: str = "<atoms>") -> dict[str, float]:
    """An ``ase.Atoms``'s total charge and spin multiplicity (``STATE_INFO_KEYS`` of its
    ``info``; absent: 0 and 1), by ``keys.GRAPH_STATE_KEYS`` name.

    Raises:
        ValueError: naming ``source`` and the field (``electronic_state``).
    """
    return {
        name: electronic_state(atoms.info, key, name, source)
        for name, key in STATE_INFO_KEYS.items()
    }


def electronic_state(info: dict, key: str, field: str, source: str) -> float:
    """A structure's total charge or spin multiplicity from its ``info`` dict.

    Args:
        info: ``atoms.info`` (or any mapping).
        key: the entry to read (e.g. ``"charge"``).
        field: ``keys.TOTAL_CHARGE`` or ``keys.TOTAL_SPIN``: what it is, and its default when
            absent (0 and 1).
        source: description used in error messages.

    Returns:
        The value as a float.

    Raises:
        ValueError: naming ``source`` and ``key`` when it is not one finite number, or a spin
            multiplicity below 1.
    """
    value = info.get(key)
    if value is None:
        return keys.GRAPH_STATE_DEFAULTS[field]
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
        raise ValueError(f"{source}: field {key!r} ({field}) must be one number, got {value!r}")
    number = float(array.reshape(()))
    if not math.isfinite(number) or (field == keys.TOTAL_SPIN and number < 1):
        what = "a spin multiplicity >= 1" if field == keys.TOTAL_SPIN else "finite"
        raise ValueError(f"{source}: field {key!r} ({field}) must be {what}, got {value!r}")
    return number


def embedded_integers(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """The integers each categorical quantity of ``embedding_specs`` embeds:
    ``{name: (lowest, highest)}`` (``-offset`` to ``num_classes - 1 - offset``); continuous
    ones take any number and are not listed."""
    return {
        name: (-spec.get("offset", 0), spec["num_classes"] - 1 - spec.get("offset", 0))
        for name, spec in specs.items()
        if spec["type"] == "categorical"
    }


def check_state(specs: Mapping[str, Mapping[str, Any]], state: Mapping[str, torch.Tensor]) -> None:
    """Raise unless every categorical quantity of ``specs`` in ``state`` is an integer its
    table embeds (``embedded_integers``).

    Args:
        specs: ``embedding_specs`` (``equiforce.nn.mace.electronic_state``).
        state: ``{name: (n_graphs,) tensor}``, e.g. a batch.

    Raises:
        ValueError: naming the quantity, the value and the integers the model embeds.
    """
    for name, (low, high) in embedded_integers(specs).items():
        value = state[name]
        bad = (value != value.round()) | (value < low) | (value > high)
        if bool(bad.any()):
            first = float(value[bad.nonzero()[0, 0]])
            raise ValueError(
                f"{name} {first:g}: the model embeds the integers {low} to {high} only"
            )
