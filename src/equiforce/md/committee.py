"""A committee of equiforce models as one ASE calculator: mean predictions plus their spread.

Each member runs through its own ``EquiforceCalculator`` (the same batch building, precision
scope and checks as a single model); the committee returns the members' mean energy, forces and
stress, and two uncertainties:

* ``energy_uncertainty``: standard deviation of the member energies, eV (population std,
  ``ddof=0``);
* ``force_uncertainty``: (n_atoms,) per-atom spread of the member forces, eV/Å:
  ``sqrt(mean_k |F_k,i - mean_k F_k,i|^2)`` (the root-mean-square distance of the member force
  vectors from their mean; zero when all members agree).

Both are multiplied by the committee's spread scales when it has been calibrated
(``equiforce calibrate``, ``workflows.calibration``: factors fitted on validation data so that
the spread is the maximum-likelihood error scale, the force factor optionally one per
species; stored in ``committee.json``); the members'
own predictions are kept as they are, ``committee_energies`` (n_members,) eV and
``committee_forces`` (n_members, n_atoms, 3) eV/Å. ``CommitteeCalculator.from_paths`` reads a
committee folder written by ``equiforce committee`` (its ``committee.json``, calibration
included) or a list of model files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from equiforce.md.calculator import EquiforceCalculator, QuickChangeCheck

if TYPE_CHECKING:
    from equiforce.models.potential import Potential

MANIFEST_NAME = "committee.json"

# Results the committee adds to the mean energy/forces/stress.
UNCERTAINTY_PROPERTIES = (
    "energy_uncertainty",
    "force_uncertainty",
    "committee_energies",
    "committee_forces",
)


def spread_scales(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The spread scales of a calibrated committee given as its one folder: the
    ``force_spread_scale``, ``energy_spread_scale`` and ``force_spread_scale_by_species``
    keyword arguments of ``CommitteeCalculator`` (empty for model files, several paths or an
    uncalibrated folder: a calibration holds for the committee it was fitted to)."""
    manifest_path = Path(paths[0]) / MANIFEST_NAME if len(paths) == 1 else None
    if manifest_path is None or not manifest_path.is_file():
        return {}  # committee_members names what is wrong with the paths
    manifest = json.loads(manifest_path.read_text())
    calibration = manifest.get("calibration") or {}
    scales: dict[str, Any] = {
        key: float(calibration[key])
        for key in ("force_spread_scale", "energy_spread_scale")
        if calibration.get(key) is not None
    }
    by_species = calibration.get("force_spread_scale_by_species")
    if by_species:
        scales["force_spread_scale_by_species"] = {s: float(v) for s, v in by_species.items()}
    return scales


def force_spread_factors(
    symbols: Sequence[str],
    force_spread_scale: float = 1.0,
    by_species: Mapping[str, float] | None = None,
) -> np.ndarray:
    """(n_atoms,) the factor on each atom's force spread: its species' scale in
    ``by_species``, else ``force_spread_scale`` (a species the calibration data lacked)."""
    by_species = by_species or {}
    return np.array([by_species.get(s, force_spread_scale) for s in symbols], dtype=np.float64)


def committee_members(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Model files of a committee given as model files and/or committee folders.

    A folder contributes the members listed in its ``committee.json`` (paths relative to the
    folder), in order.

    Raises:
        FileNotFoundError: a path, a manifest or a listed member does not exist.
        ValueError: a folder without ``committee.json``.
    """
    members: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"model or committee folder {path} does not exist")
        if not path.is_dir():
            members.append(path)
            continue
        manifest = path / MANIFEST_NAME
        if not manifest.exists():
            raise ValueError(f"{path} is a folder without {MANIFEST_NAME}: not a committee")
        for name in json.loads(manifest.read_text())["members"]:
            member = path / name
            if not member.exists():
                raise FileNotFoundError(f"{manifest} lists {name}, but {member} does not exist")
            members.append(member)
    return members


class CommitteeCalculator(QuickChangeCheck, Calculator):
    """Mean energy, forces and stress of several equiforce models, and their spread.

    Args:
        models: the members: ``Potential`` objects, model files, or ``EquiforceCalculator``s
            (used as they are). At least two for a meaningful spread; one gives zero spread.
        device: torch device of members given as models or files.
        dtype: parameter dtype of members given as models or files (see
            ``EquiforceCalculator``).
        precision: precision mode of members given as models or files.
        force_spread_scale: factor on ``force_uncertainty`` (a calibration, module docstring).
        energy_spread_scale: factor on ``energy_uncertainty``.
        force_spread_scale_by_species: chemical symbol -> factor on the ``force_uncertainty``
            of that species' atoms, in place of ``force_spread_scale`` (which the species not
            listed keep).
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    Results (``self.results``): ``energy``/``free_energy`` (eV), ``forces`` (n_atoms, 3) eV/Å,
    ``stress`` (Voigt, eV/Å^3, when asked for) are the members' means; plus
    ``UNCERTAINTY_PROPERTIES`` (module docstring).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", *UNCERTAINTY_PROPERTIES]

    def __init__(
        self,
        models: Sequence[Potential | str | os.PathLike | EquiforceCalculator],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        precision: str | None = None,
        force_spread_scale: float = 1.0,
        energy_spread_scale: float = 1.0,
        force_spread_scale_by_species: Mapping[str, float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(models) == 0:
            raise ValueError("a committee needs at least one model")
        by_species = dict(force_spread_scale_by_species or {})
        named = {
            "force_spread_scale": force_spread_scale,
            "energy_spread_scale": energy_spread_scale,
        }
        named.update({f"force_spread_scale_by_species[{s!r}]": v for s, v in by_species.items()})
        for name, scale in named.items():
            if not np.isfinite(scale) or scale <= 0:
                raise ValueError(f"{name} must be positive and finite, got {scale}")
        self.force_spread_scale = float(force_spread_scale)
        self.energy_spread_scale = float(energy_spread_scale)
        self.force_spread_scale_by_species = {s: float(v) for s, v in by_species.items()}
        self.members = [
            m
            if isinstance(m, EquiforceCalculator)
            else EquiforceCalculator(m, device=device, dtype=dtype, precision=precision)
            for m in models
        ]

    @classmethod
    def from_paths(
        cls, paths: Sequence[str | os.PathLike], calibrated: bool = True, **kwargs
    ) -> CommitteeCalculator:
        """A committee of model files and/or committee folders (``committee_members``), with
        the folder's spread scales (``spread_scales``) unless ``calibrated`` is False."""
        scales = spread_scales(paths) if calibrated else {}
        return cls(committee_members(paths), **{**scales, **kwargs})

    def __len__(self) -> int:
        return len(self.members)

    def calculate(
        self,
        atoms=None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        """Fill ``self.results`` with the committee mean and spread (see the class docstring).

        Forces (and their spread) are computed unless only energies and the energy spread are
        asked for; stress only when asked for.
        """
        super().calculate(atoms, properties, system_changes)
        energy_only = set(properties) <= {"energy", "free_energy", "energy_uncertainty"}
        asked = ["energy"] if energy_only else ["energy", "forces"]
        if "stress" in properties:
            asked.append("stress")
        results, batches = [], {}
        for member in self.members:  # one batch per (species, r_max, device): one neighbour list
            key = member.batch_key()
            if key not in batches:
                batches[key] = member.batch(self.atoms)
            member.atoms = self.atoms.copy()  # what its own calculate would keep (ASE's cache)
            member.evaluate(batches[key], asked)
            results.append(member.results)
        energies = np.array([r["energy"] for r in results], dtype=np.float64)
        self.results = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "energy_uncertainty": self.energy_spread_scale * float(energies.std()),
            "committee_energies": energies,
        }
        if not energy_only:
            forces = np.stack([r["forces"] for r in results])  # (n_members, n_atoms, 3)
            mean = forces.mean(axis=0)
            self.results["forces"] = mean
            self.results["committee_forces"] = forces
            factors = force_spread_factors(
                self.atoms.get_chemical_symbols(),
                self.force_spread_scale,
                self.force_spread_scale_by_species,
            )
            self.results["force_uncertainty"] = factors * force_spread(forces, mean)
        if "stress" in asked:
            self.results["stress"] = np.stack([r["stress"] for r in results]).mean(axis=0)

    def member_energies_and_forces(self, frames: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every member's energies and forces of several structures, each member's in one
        model call (``EquiforceCalculator.energies_and_forces``).

        Returns:
            energies (n_members, n_frames) eV and per frame the forces (n_members,
            n_atoms_k, 3) eV/Å.
        """
        results = [member.energies_and_forces(frames) for member in self.members]
        energies = np.stack([energies for energies, _ in results])
        forces = [np.stack([member[1][k] for member in results]) for k in range(len(frames))]
        return energies, forces

    def energies_and_forces(self, frames: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
        """The committee's mean energies (n_frames,) eV and forces (n_atoms_k, 3) eV/Å of
        several structures (``member_energies_and_forces``): a NEB's band in one call per
        member."""
        energies, forces = self.member_energies_and_forces(frames)
        return energies.mean(axis=0), [force.mean(axis=0) for force in forces]


def force_spread(forces: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Per-atom spread of committee forces, eV/Å.

    Args:
        forces: (n_members, n_atoms, 3) member forces, eV/Å.
        mean: (n_atoms, 3) their mean (computed when None).

    Returns:
        (n_atoms,) ``sqrt(mean_k |F_k,i - mean_i|^2)``.
    """
    mean = forces.mean(axis=0) if mean is None else mean
    return np.sqrt(np.mean(np.sum((forces - mean) ** 2, axis=-1), axis=0))
