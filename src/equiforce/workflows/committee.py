"""Committees: N models of one run file, differing in seed (and optionally training subset).

``train_committee(run, committee)`` (``equiforce committee config.yaml --size N``) trains
``committee.size`` members with the ordinary trainer (``equiforce.train.train``): member ``k``
is the run file with ``seed + k`` (a different initialisation, validation split and shuffle
order) and ``output_dir/member_<k>``; with ``subsample`` it trains on a seeded random fraction
of the training file (bagging), written to ``member_<k>/train_subset.xyz``. Members train
``workers`` at a time in spawned processes, each with ``threads_per_worker`` torch threads
(default: the cores shared evenly).

Output folder (``run.output_dir``)::

    committee.json          # members (model paths relative to the folder), seeds, settings
    member_<k>/             # one training run each (model.pt, metrics.csv, checkpoints/, ...)
    member_<k>/member.json  # written when the member has finished

``equiforce md --model OUT`` and ``md.committee.CommitteeCalculator.from_paths([OUT])`` read
the folder. A rerun with ``resume`` skips finished members and continues interrupted ones.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from equiforce.files import atomic_write_text
from equiforce.md.committee import MANIFEST_NAME
from equiforce.train.config import RunConfig
from equiforce.typed_config import build_section, check_field

LOG = logging.getLogger(__name__)

MEMBER_DONE = "member.json"


@dataclass(frozen=True)
class CommitteeConfig:
    """How a committee is made from one run file.

    Attributes:
        size: number of members, >= 2.
        subsample: fraction of the training file each member trains on, drawn at random with
            the member's seed, in (0, 1]; None (default) trains every member on all of it, so
            the members differ only by seed.
        workers: members trained at the same time (spawned processes).
        threads_per_worker: torch threads of each worker; None shares the cores evenly.
    """

    size: int = 4
    subsample: float | None = None
    workers: int = 1
    threads_per_worker: int | None = None

    def __post_init__(self):
        check_field(self.size >= 2, "committee.size", "must be >= 2")
        fraction = self.subsample
        check_field(
            fraction is None or 0.0 < fraction <= 1.0, "committee.subsample", "must be in (0, 1]"
        )
        check_field(self.workers >= 1, "committee.workers", "must be >= 1")
        threads = self.threads_per_worker
        check_field(threads is None or threads >= 1, "committee.threads_per_worker", "must be >= 1")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CommitteeConfig:
        """Build from a mapping; unknown keys raise ``ConfigError`` naming ``committee.<key>``."""
        return build_section(cls, values, "committee.")

    def threads(self) -> int:
        """Torch threads per worker."""
        return self.threads_per_worker or max(1, (os.cpu_count() or 1) // self.workers)


@dataclass(frozen=True)
class CommitteeResult:
    """Outcome of ``train_committee``.

    Attributes:
        output_dir: the committee folder (pass it to ``equiforce md --model``).
        manifest: its ``committee.json``.
        model_paths: the members' model files, in order.
        members: one summary per member (seed, training file, epochs, validation RMSEs).
    """

    output_dir: Path
    manifest: Path
    model_paths: list[Path]
    members: list[dict[str, Any]]


def member_dir(output_dir: str | Path, index: int) -> Path:
    """Folder of member ``index`` in a committee folder."""
    return Path(output_dir) / f"member_{index}"


def member_config(
    run: RunConfig, committee: CommitteeConfig, index: int, init_model: str | None = None
) -> RunConfig:
    """The run file of member ``index``: its seed, folder, training file and start weights.

    Args:
        run: the committee's run file (its ``output_dir`` is the committee folder).
        committee: the committee settings.
        index: 0-based member number.
        init_model: weights to fine-tune from (``training.init_model``); None keeps the run
            file's.
    """
    folder = member_dir(run.output_dir, index)
    seed = run.seed + index
    data = run.data
    if committee.subsample is not None and data.train_files is not None:
        entries = []
        for k, entry in enumerate(data.train_files):  # each weighted file subsampled alike
            subset = folder / f"train_subset_{k}.xyz"
            _write_subsample(entry.path, committee.subsample, seed, subset)
            # the name stays the original file's: metrics.csv columns are named after it
            entries.append(dataclasses.replace(entry, path=str(subset), name=entry.label))
        data = dataclasses.replace(data, train_files=tuple(entries))
    elif committee.subsample is not None:
        subset = folder / "train_subset.xyz"
        _write_subsample(data.train_file, committee.subsample, seed, subset)
        data = dataclasses.replace(data, train_file=str(subset))
    training = run.training
    if init_model is not None:
        training = dataclasses.replace(training, init_model=str(init_model))
    return dataclasses.replace(run, output_dir=str(folder), seed=seed, data=data, training=training)


def _write_subsample(train_file: str, fraction: float, seed: int, path: Path) -> None:
    """Write a seeded random ``fraction`` of ``train_file``'s frames (at least one) to ``path``.

    An existing subset is kept, so a resumed member trains on the same frames.
    """
    if path.exists():
        return
    from ase.io import read, write

    frames = read(train_file, index=":")
    count = max(1, round(fraction * len(frames)))
    chosen = np.sort(np.random.default_rng(seed).choice(len(frames), count, replace=False))
    text = io.StringIO()
    write(text, [frames[i] for i in chosen], format="extxyz")
    atomic_write_text(text.getvalue(), path)


def train_committee(
    run: RunConfig,
    committee: CommitteeConfig,
    resume: bool = False,
    init_models: Sequence[str | os.PathLike] | None = None,
) -> CommitteeResult:
    """Train the committee's members and write ``committee.json``.

    Args:
        run: the run file; ``output_dir`` becomes the committee folder.
        committee: size, subsampling and parallelism.
        resume: skip finished members, continue interrupted ones (``train(resume=True)``).
        init_models: one model file per member to fine-tune from (active learning), or None.

    Returns:
        The folder, its manifest and the members' model files.

    Raises:
        FileExistsError: a member folder holds a run and ``resume`` is not set.
        ValueError: ``init_models`` of the wrong length.
    """
    if init_models is not None and len(init_models) != committee.size:
        raise ValueError(
            f"init_models has {len(init_models)} files for a committee of {committee.size}"
        )
    inits = [None] * committee.size if init_models is None else [str(p) for p in init_models]
    work = [
        (member_config(run, committee, k, inits[k]), resume, committee.threads())
        for k in range(committee.size)
    ]
    done = [(Path(c.output_dir) / MEMBER_DONE).exists() for c, _, _ in work]
    if any(done) and not resume:
        first = work[done.index(True)][0].output_dir
        raise FileExistsError(
            f"{first} already holds a finished member; use --resume or another output_dir"
        )
    todo = [item for item, finished in zip(work, done, strict=True) if not finished]
    LOG.info("committee of %d in %s: %d to train", committee.size, run.output_dir, len(todo))
    if committee.workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(committee.workers, len(todo)), maxtasksperchild=1) as pool:
            pool.map(_train_member, todo, chunksize=1)
    else:
        for item in todo:
            _train_member(item)
    members = [json.loads((Path(c.output_dir) / MEMBER_DONE).read_text()) for c, _, _ in work]
    out = Path(run.output_dir)
    manifest = {
        "members": [m["model"] for m in members],
        "size": committee.size,
        "subsample": committee.subsample,
        "seeds": [m["seed"] for m in members],
    }
    path = atomic_write_text(json.dumps(manifest, indent=2) + "\n", out / MANIFEST_NAME)
    return CommitteeResult(out, path, [out / m["model"] for m in members], members)


def _train_member(work: tuple[RunConfig, bool, int]) -> None:
    """Train one member (in this or a spawned process) and write its ``member.json``."""
    from equiforce.train.run import train

    config, resume, threads = work
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(threads)
    folder = Path(config.output_dir)
    resume_run = resume and (folder / "checkpoints" / "last.pt").exists()
    result = train(config, resume=resume_run)
    metrics = result.final_metrics
    summary = {
        "model": f"{folder.name}/{result.model_path.name}",
        "seed": config.seed,
        "train_file": config.data.train_file,
        "train_files": [e.path for e in config.data.train_files or ()],
        "init_model": config.training.init_model,
        "epochs": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "valid_energy_rmse": metrics.get("valid_energy_rmse"),
        "valid_forces_rmse": metrics.get("valid_forces_rmse"),
    }
    atomic_write_text(json.dumps(summary, indent=2) + "\n", folder / MEMBER_DONE)
