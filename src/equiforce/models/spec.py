"""``ModelSpec``: the fields and checks every architecture's spec shares.

A family's spec (``MACESpec``, ``AllegroSpec``) is a frozen dataclass extending ``ModelSpec``
with its own hyperparameters; the trainer fills the dataset-derived common fields
(``type_names``, ``atomic_energies``, ``avg_num_neighbors``, ``scale``, ``shift``) with
``dataclasses.replace``. Every field but ``type_names`` is keyword-only, so a family's extra
fields can never be filled positionally by mistake.

Construction normalises sequences (lists from YAML/JSON become tuples: fields annotated
``tuple[int, ...]`` / ``tuple[float, ...]`` get their items converted) and then raises a
``ValueError`` listing every problem ``problems()`` finds, each naming its field. A family
adds its own checks by extending ``problems()``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import Mapping

import torch

from equiforce.nn.zbl import FORMS as ZBL_FORMS

__all__ = ["DTYPES", "ModelSpec", "integer_problems", "positive_problems"]

DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"float32": torch.float32, "float64": torch.float64}
)

# item converters of tuple fields, by annotation (``from __future__ import annotations``);
# str items are kept as they are (``problems`` checks them)
_TUPLE_ITEMS = {"tuple[int, ...]": int, "tuple[float, ...]": float, "tuple[str, ...]": str}


@dataclass(frozen=True)
class ModelSpec:
    """The fields every architecture's spec has.

    Attributes:
        type_names: chemical symbols, in ``atom_type`` order. Required.
        r_max: cutoff radius, Å (default 5.0); edges are the pairs closer than r_max.
        avg_num_neighbors: message / environment normalisation (default 1.0); the trainer
            sets it to the training set's mean neighbour count.
        atomic_energies: isolated-atom energy E0 per type, eV (default: empty = zeros);
            the trainer fills them from the data.
        scale: multiplier of the learned per-atom energy, eV (default 1.0); typically the
            force RMS of the training data.
        shift: per-atom energy shift, eV (default 0.0).
        dtype: parameter dtype, "float64" (default; exact forces, MD) or "float32".
        seed: seed of the local generator for the initial weights (default 0); building
            never touches the global RNG.
        pair_repulsion: add the ZBL screened nuclear repulsion to each atom's energy
            (``equiforce.nn.zbl``; default False): it keeps atoms apart where the data has no
            close contacts. Per edge, so a strictly local model stays so. MACE adds it before
            its scale and shift (as mace-torch's ``--pair_repulsion``), Allegro after them,
            unscaled (as nequip's ``ZBL`` pair potential).
        pair_repulsion_form: ``"mace"`` (default; mace-torch's constants, cut off at the sum
            of the covalent radii) or ``"lammps"`` (LAMMPS's ``pair_style zbl`` constants as
            nequip uses them, cut off at the model's cutoff of the pair), both with the
            model's envelope order.
    """

    type_names: tuple[str, ...]
    _: KW_ONLY
    r_max: float = 5.0
    avg_num_neighbors: float = 1.0
    atomic_energies: tuple[float, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    dtype: str = "float64"
    seed: int = 0
    pair_repulsion: bool = False
    pair_repulsion_form: str = "mace"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.type in _TUPLE_ITEMS:
                convert = _TUPLE_ITEMS[f.type]
                items = tuple(v if convert is str else convert(v) for v in getattr(self, f.name))
                object.__setattr__(self, f.name, items)
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    @property
    def torch_dtype(self) -> torch.dtype:
        """Parameter dtype as a ``torch.dtype``."""
        return DTYPES[self.dtype]

    def problems(self) -> list[str]:
        """What is wrong with the common fields, one sentence per problem naming its field.

        Families extend it (``super().problems() + [...]``).
        """
        names = self.type_names
        problems = []
        symbols = all(isinstance(n, str) for n in names)
        if not names or len(set(names)) != len(names) or not symbols:
            problems.append(f"type_names must be non-empty and unique symbols, got {names}")
        problems += positive_problems(
            {"r_max": self.r_max, "avg_num_neighbors": self.avg_num_neighbors}
        )
        problems += integer_problems({"seed": (self.seed, 0, None)})
        for name in ("scale", "shift"):
            if not math.isfinite(getattr(self, name)):
                problems.append(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.atomic_energies and len(self.atomic_energies) != len(names):
            problems.append(
                f"atomic_energies has {len(self.atomic_energies)} entries for "
                f"{len(names)} types (or none)"
            )
        if not all(math.isfinite(e) for e in self.atomic_energies):
            problems.append("atomic_energies must be finite")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.pair_repulsion, bool):
            problems.append(f"pair_repulsion must be true or false, got {self.pair_repulsion!r}")
        if self.pair_repulsion_form not in ZBL_FORMS:
            problems.append(
                f"pair_repulsion_form must be one of {sorted(ZBL_FORMS)}, "
                f"got {self.pair_repulsion_form!r}"
            )
        return problems


def integer_problems(ranges: Mapping[str, tuple[object, int, int | None]]) -> list[str]:
    """Problems of integer fields: ``{name: (value, low, high or None)}``, bounds inclusive."""
    problems = []
    for name, (value, low, high) in ranges.items():
        valid = isinstance(value, int) and not isinstance(value, bool)
        if not valid or value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            problems.append(f"{name} must be an integer {bound}, got {value!r}")
    return problems


def positive_problems(values: Mapping[str, object]) -> list[str]:
    """Problems of fields that must be finite positive numbers: ``{name: value}``."""
    return [
        f"{name} must be a positive number, got {value!r}"
        for name, value in values.items()
        if not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        )
    ]
