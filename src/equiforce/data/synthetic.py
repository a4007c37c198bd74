"""Generated datasets for the quickstart and tests: EMT-labelled Cu/Au MD snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ase < 3.29 only has the (since deprecated) older name
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta


@dataclass(frozen=True)
class EMTDatasetSpec:
    """How to generate a Cu/Au dataset with ASE's EMT calculator.

    Attributes:
        repeat: cubic fcc cell repeated ``repeat`` times per axis (4 atoms per cubic cell).
        au_fraction: fraction of sites occupied by Au.
        temperatures_K: Langevin temperatures; snapshots are drawn from each in turn.
        n_configs: total number of snapshots.
        steps_between: MD steps (1 fs each) between snapshots, for decorrelation.
        strain: maximum random strain component; every snapshot gets its own random affine
            deformation, so the set spans many cell shapes and volumes and the stress labels
            (and the energy's volume dependence) are learnable.
        seed: seeds the alloy ordering, strains, velocities and the thermostat.
    """

    repeat: int = 2
    au_fraction: float = 0.25
    temperatures_K: tuple[float, ...] = (300.0, 800.0, 1400.0)
    n_configs: int = 150
    steps_between: int = 10
    strain: float = 0.03
    seed: int = 0


def _starting_cell(spec: EMTDatasetSpec, rng: np.random.Generator) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.68, cubic=True) * (spec.repeat, spec.repeat, spec.repeat)
    numbers = atoms.numbers.copy()
    n_au = int(round(spec.au_fraction * len(atoms)))
    numbers[rng.choice(len(atoms), n_au, replace=False)] = 79
    atoms.numbers = numbers
    return atoms


def _labelled_snapshot(atoms: Atoms, strain: float, rng: np.random.Generator) -> Atoms:
    """A randomly deformed copy of an MD frame, labelled with EMT."""
    snapshot = atoms.copy()
    snapshot.calc = None
    deformation = np.eye(3) + rng.uniform(-strain, strain, size=(3, 3))
    snapshot.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    calculator = EMT()
    snapshot.calc = SinglePointCalculator(
        snapshot,
        energy=calculator.get_potential_energy(snapshot),
        forces=calculator.get_forces(snapshot),
        stress=calculator.get_stress(snapshot),
    )
    return snapshot


def generate_emt_dataset(spec: EMTDatasetSpec) -> list[Atoms]:
    """Langevin MD snapshots of a Cu/Au cell, each randomly deformed, labelled with EMT.

    Returns:
        ``spec.n_configs`` periodic structures, each carrying a SinglePointCalculator with
        energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE sign).
    """
    rng = np.random.default_rng(spec.seed)
    per_temperature = int(np.ceil(spec.n_configs / len(spec.temperatures_K)))
    frames: list[Atoms] = []
    for temperature in spec.temperatures_K:
        atoms = _starting_cell(spec, rng)
        atoms.calc = EMT()
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        dynamics = Langevin(
            atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng
        )
        for _ in range(per_temperature):
            dynamics.run(spec.steps_between)
            frames.append(_labelled_snapshot(atoms, spec.strain, rng))
    order = rng.permutation(len(frames))[: spec.n_configs]
    return [frames[i] for i in order]


def write_splits(
    frames: list[Atoms], out_dir: Path, fractions: tuple[float, float] = (0.7, 0.15)
) -> dict[str, Path]:
    """Write train / valid / test extxyz files; the rest after train+valid is the test set.

    Returns:
        Mapping ``{"train": path, "valid": path, "test": path}``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    n_train = int(round(fractions[0] * len(frames)))
    n_valid = int(round(fractions[1] * len(frames)))
    parts = {
        "train": frames[:n_train],
        "valid": frames[n_train : n_train + n_valid],
        "test": frames[n_train + n_valid :],
    }
    paths = {}
    for name, part in parts.items():
        if not part:
            raise ValueError(f"split {name!r} is empty: generate more configurations")
        paths[name] = out_dir / f"{name}.xyz"
        write(paths[name], part, format="extxyz")
    return paths
