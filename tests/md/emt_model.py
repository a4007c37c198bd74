"""A quickly trained, physically sensible Cu model: a tiny MACE fitted to EMT (~18 s, 1 thread).

24 rattled, randomly strained 4-atom fcc Cu cells labelled with ASE's EMT (energy, forces,
stress), 25 epochs. Its E(V) curve has its minimum near EMT's (a ~ 3.60 Å) with a similar
bulk modulus (pressure within ~2 GPa of EMT's between a = 3.45 and 3.80 Å), so relaxations
converge and a barostat finds an equilibrium volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.io import write

from equiforce.testing.structures import emt_labelled


def emt_cu_frames(n_frames: int = 24, seed: int = 0) -> list:
    """Rattled (0.08 Å) fcc Cu cells strained by up to ~4 %, EMT-labelled."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        strain = np.eye(3) * (1 + rng.uniform(-0.04, 0.04)) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.08, seed=index)
        frames.append(emt_labelled(atoms))
    return frames


def train_emt_cu_model(folder: Path) -> Path:
    """Train the tiny Cu MACE in ``folder``; returns the model file."""
    from equiforce.train.config import RunConfig
    from equiforce.train.run import train

    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "train.xyz", emt_cu_frames(), format="extxyz")
    config = {
        "output_dir": str(folder / "run"),
        "seed": 0,
        "data": {"train_file": str(folder / "train.xyz"), "valid_fraction": 0.2, "batch_size": 4},
        "model": {
            "family": "mace",
            "r_max": 4.5,
            "num_channels": 8,
            "max_L": 0,
            "max_ell": 2,
            "correlation": 2,
            "num_interactions": 1,
            "num_radial_basis": 6,
            "radial_mlp": [16],
            "dtype": "float64",
        },
        "training": {
            "max_epochs": 25,
            "lr": 0.02,
            "energy_weight": 10.0,
            "forces_weight": 10.0,
            "stress_weight": 100.0,
            "ema": {"enabled": True, "decay": 0.9},
            "device": "cpu",
            "progress_bar": False,
        },
    }
    return train(RunConfig.from_dict(config)).model_path
