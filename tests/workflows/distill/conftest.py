"""Fixtures for the distillation tests: tiny EMT-labelled Cu/Au data and a tiny student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ase.io import write

from equiforce.testing.structures import emt_labelled, make_fcc_cu
from tests.train.conftest import TINY_MACE

# The tiny MACE of the training tests (invariant messages, one interaction) as the student.
TINY_STUDENT = TINY_MACE


@pytest.fixture(scope="session")
def emt_files(tmp_path_factory) -> dict[str, Path]:
    """Train (10), valid (3) and test (4) rattled 4-atom Cu/Au cells labelled with EMT."""
    folder = tmp_path_factory.mktemp("emt")
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1)) for s in range(17)]
    paths = {
        "train": folder / "train.xyz",
        "valid": folder / "valid.xyz",
        "test": folder / "test.xyz",
    }
    write(paths["train"], frames[:10], format="extxyz")
    write(paths["valid"], frames[10:13], format="extxyz")
    write(paths["test"], frames[13:], format="extxyz")
    return paths


def distill_dict(output_dir: Path, files: dict[str, Path], **sections: Any) -> dict[str, Any]:
    """A small distillation over ``files`` with an EMT teacher; ``sections`` replace defaults."""
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "teacher": {"calculator": "ase.calculators.emt:EMT"},
        "data": {
            "train_file": str(files["train"]),
            "valid_file": str(files["valid"]),
            "test_file": str(files["test"]),
            "batch_size": 4,
        },
        "augment": {
            "rattle": {"scales": [0.03], "copies": 1},
            "md": {"temperatures": [300.0], "n_starts": 1, "n_snapshots": 2, "interval": 3},
        },
        "labels": {"save_every": 4},
        "student": dict(TINY_STUDENT),
        "training": {"max_epochs": 1, "progress_bar": False},
        "report": {"timing_calls": 1, "warmup_calls": 0},
    }
    values.update(sections)
    return values
