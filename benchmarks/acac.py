"""What the AcAc training benchmarks share: the fixed split, the recipe, the test errors.

``acac_train``, ``precision_acac`` and ``distill_acac`` train on ``acac/train_300K.xyz`` of
the data folder: its first ``n_train`` frames (450) train, its last 50 validate (a fixed
split, byte-identical frame copies, see ``equiforce.data.frames``), E0s come from
``acac/isolated_atoms.xyz``; errors are ``equiforce.train.evaluate``'s on ``test_MD_300K`` and
``test_MD_600K``. Models come from ``equiforce.models.presets``.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from benchmarks.common import require_data
from equiforce.data.extxyz import read_configurations
from equiforce.data.frames import fixed_split, write_frames
from equiforce.models import Potential
from equiforce.train.evaluate import evaluate, to_json

TEST_SETS = ("test_MD_300K", "test_MD_600K")
N_VALID = 50
SMOKE = {"n_train": 20, "n_valid": 5, "n_test": 10}  # --smoke: frames per set


@dataclass(frozen=True)
class Split:
    """The files of one benchmark run.

    Attributes:
        train, valid: the fixed split of ``train_300K.xyz``.
        isolated: ``isolated_atoms.xyz``.
        tests: test-set name -> file (the first ``n_test`` frames when cut).
    """

    train: Path
    valid: Path
    isolated: Path
    tests: dict[str, Path]


def write_split(
    data_dir: Path, out: Path, n_train: int, n_valid: int = N_VALID, n_test: int | None = None
) -> Split:
    """Write the fixed split (and cut test sets with ``n_test``) into ``out/data``.

    Raises:
        FileNotFoundError: a data file is missing (naming ``--data-dir``).
    """
    names = ["train_300K", "isolated_atoms", *TEST_SETS]
    files = dict(zip(names, require_data(data_dir, *(f"acac/{n}.xyz" for n in names)), strict=True))
    train, valid = fixed_split(files["train_300K"], out / "data", n_train, n_valid)
    tests = {name: files[name] for name in TEST_SETS}
    if n_test is not None:
        tests = {
            name: write_frames(path, out / "data" / f"{name}.xyz", slice(n_test))
            for name, path in tests.items()
        }
    return Split(train, valid, files["isolated_atoms"], tests)


def data_section(split: Split) -> dict[str, Any]:
    """The run file's data section: the split, E0s from the isolated atoms, batches 5 / 10."""
    return {
        "train_file": str(split.train),
        "valid_file": str(split.valid),
        "isolated_atoms_file": str(split.isolated),
        "batch_size": 5,
        "valid_batch_size": 10,
    }


def training_section(budget_s: float | None = None, **changes: Any) -> dict[str, Any]:
    """mace-torch's recipe (``TrainConfig``'s defaults), on the CPU, with a wall budget.

    Defaults: Adam (AMSGrad) lr 0.01, weight decay 5e-7, loss 1 x energy/atom + 100 x forces
    MSE, plateau schedule (0.8, patience 50), EMA 0.99, gradient clipping 10, no stage two.
    ``changes`` override any key (e.g. ``lr``, ``max_epochs``).
    """
    return {
        "max_epochs": 100000,
        "stress_weight": 0.0,
        "time_budget_s": budget_s,
        "device": "cpu",
        "progress_bar": False,
        **changes,
    }


def test_errors(model: Potential, tests: dict[str, Path]) -> dict[str, Any]:
    """Each test set's errors (``evaluate``: meV, meV/atom, meV/Å; RMSE, MAE, count)."""
    out = {}
    for name, path in tests.items():
        result = evaluate(model, read_configurations(path), batch_size=32)
        out[name] = json.loads(to_json(result))["metrics"]
    return out


def process_pool(threads: int, jobs: int = 1) -> ProcessPoolExecutor:
    """A pool of ``jobs`` fresh (spawned) processes with ``threads`` torch threads each; one
    task per process, so that runs stay independent of each other and of this process."""
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(threads,),
        max_tasks_per_child=1,
    )


def molecule_grid(
    molecules: Sequence[Atoms], n_side: int, spacing: float, seed: int | None = None
) -> Atoms:
    """Molecules, each centred, on the sites of an ``n_side``^3 grid ``spacing`` Å apart.

    Without ``seed``: sites in order, orientations unchanged, no cell (independent molecules,
    the distillation timing's 64 AcAc). With ``seed``: a random subset of the sites, random
    orientations, and a periodic cell of the grid's size (the precision timing's box).
    """
    rng = None if seed is None else np.random.default_rng(seed)
    slots = range(len(molecules)) if rng is None else rng.permutation(n_side**3)
    grid = Atoms()
    for slot, molecule in zip(slots, molecules, strict=False):
        centred = molecule.positions - molecule.positions.mean(axis=0)
        if rng is not None:
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            centred = centred @ (q * np.sign(np.diag(r))).T
        site = np.array(np.unravel_index(slot, (n_side,) * 3), dtype=float) * spacing
        grid += Atoms(molecule.numbers, positions=centred + site)
    if rng is not None:
        grid.cell = np.eye(3) * spacing * n_side
        grid.pbc = True
    return grid
